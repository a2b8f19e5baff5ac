"""Draft tokens for speculative decoding by prompt lookup: no draft model, only the context.

Chat replies repeat their context (names, code, quoted text); when the last few tokens appeared
before, the tokens that followed them then are a cheap guess at what follows now.
"""

from __future__ import annotations

MAX_NGRAM = 3  # longest suffix looked up; longer matches make surer guesses


def lookup_draft(context: list[int], k: int, max_ngram: int = MAX_NGRAM) -> list[int]:
    """Up to `k` tokens that followed the most recent earlier occurrence of the context's last n
    tokens (n from `max_ngram` down to 1); [] when the tail never occurred before."""
    if k <= 0:
        return []
    for n in range(min(max_ngram, len(context) - 1), 0, -1):
        tail = context[-n:]
        for at in range(len(context) - n - 1, -1, -1):
            if context[at:at + n] == tail:
                return context[at + n:at + n + k]
    return []
