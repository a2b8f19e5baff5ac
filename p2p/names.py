"""How people see peers and blocks, everywhere (windows, transcript, CLI, logs): one short name per
peer and one notation for blocks. Nothing of ours is imported: errors and records use it."""

from __future__ import annotations

NICKNAME_MAX = 32  # characters
SHORT_ID = 8  # characters of the peer id shown: its end (every ed25519 id starts "12D3KooW")


class NicknameError(ValueError):
    """A nickname that is too long, not text, or holds characters that cannot be shown."""


def check_nickname(value: object) -> str:
    """`value` if it is an acceptable nickname ('' for none), else NicknameError."""
    if not isinstance(value, str):
        raise NicknameError("a nickname must be text")
    if len(value) > NICKNAME_MAX:
        raise NicknameError(f"a nickname is at most {NICKNAME_MAX} characters, got {len(value)}")
    # printable only: no control, format (bidi overrides) or line-breaking characters
    if not value.isprintable() or value != value.strip():
        raise NicknameError("a nickname may hold printable characters only, without leading or trailing spaces")
    return value


def short_id(peer_id: str) -> str:
    """The end of a peer id, as people see it: '…XuRRFrVM'."""
    peer_id = str(peer_id)
    return peer_id if len(peer_id) <= SHORT_ID + 1 else f"…{peer_id[-SHORT_ID:]}"


def peer_name(peer_id: str, nickname: str = "") -> str:
    """The one way to name a peer: 'alice (…XuRRFrVM)', or '…XuRRFrVM' without a nickname."""
    return f"{nickname} ({short_id(peer_id)})" if nickname else short_id(peer_id)


def block_span(start: int, end: int) -> str:
    """Blocks [start, end) for people: '10–19' (or '10' for one block); END is excluded as in 10:20."""
    return str(start) if end - start == 1 else f"{start}–{end - 1}"


def blocks_text(start: int, end: int) -> str:
    """Blocks [start, end) in a sentence: 'blocks 10–19' or 'block 10'."""
    return f"{'block' if end - start == 1 else 'blocks'} {block_span(start, end)}"


def format_blocks(blocks: list[int]) -> str:
    """A set of blocks for people: [0, 1, 2, 5, 7, 8] -> '0–2, 5, 7–8'."""
    runs: list[list[int]] = []
    for b in sorted(set(blocks)):
        if runs and runs[-1][1] == b - 1:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    return ", ".join(block_span(a, b + 1) for a, b in runs)
