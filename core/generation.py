"""Sampling and the generation loop, independent of where the blocks run (local spans or a swarm)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from corolla.core.drafts import lookup_draft
from corolla.core.errors import CorollaError
from corolla.core.head import ClientHead


class SamplingError(CorollaError):
    """A sampling setting has a value Corolla refuses (the message names it and why)."""


class Rollback(CorollaError):
    """The blocks' outputs from `position` on turned out wrong (a server lied): generate again from there."""

    def __init__(self, position: int):
        super().__init__(f"outputs from position {position} on were wrong")
        self.position = position


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. Temperature 0 means greedy: always the most likely token.

    The defaults change nothing about the model's distribution but the temperature; the chat's
    defaults are CHAT_SAMPLING.
    """

    temperature: float = 0.7
    top_p: float = 1.0  # 1.0: off
    top_k: int = 0  # 0: off
    max_new_tokens: int = 64
    repetition_penalty: float = 1.0  # 1.0: off
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def replace(self, **changes: object) -> SamplingParams:
        """A copy with `changes` applied (checked where it is used, by `validated()`)."""
        return dataclasses.replace(self, **changes)

    def validated(self) -> SamplingParams:
        """Return self if every value is acceptable, else raise SamplingError naming the value."""
        for name in ("temperature", "top_p", "repetition_penalty"):
            _check(_is_number(getattr(self, name)), name.replace("_", " "), getattr(self, name), "must be a number")
        _check(0.0 <= self.temperature <= 5.0, "temperature", self.temperature,
               "must be between 0 (greedy) and 5")
        _check(0.0 < self.top_p <= 1.0, "top-p", self.top_p, "must be above 0 and at most 1")
        _check(_is_int(self.top_k) and self.top_k >= 0, "top-k", self.top_k, "must be a whole number >= 0 (0: off)")
        _check(_is_int(self.max_new_tokens) and 1 <= self.max_new_tokens <= MAX_NEW_TOKENS, "max new tokens",
               self.max_new_tokens, f"must be a whole number from 1 to {MAX_NEW_TOKENS}")
        _check(1.0 <= self.repetition_penalty <= 3.0, "repetition penalty", self.repetition_penalty,
               "must be between 1 (off) and 3")
        _check(self.seed is None or _is_int(self.seed), "seed", self.seed, "must be a whole number")
        _check(isinstance(self.stop, tuple) and all(isinstance(x, str) for x in self.stop), "stop strings",
               self.stop, "must be a list of texts")
        return self


MAX_NEW_TOKENS = 8192
MAX_SPECULATIVE = 16  # guessed tokens per step: more rarely pays, and each costs compute on every server
# What the chat starts with (a user changes them in the window; they are kept in the settings).
CHAT_SAMPLING = SamplingParams(temperature=0.7, top_p=0.9, top_k=50, max_new_tokens=256, repetition_penalty=1.1)


# For a model whose generation_config.json says nothing about sampling: close to what small instruct
# models' authors recommend (SmolLM2-Instruct: temperature 0.2, top-p 0.9); higher temperatures
# make small models ramble.
CONSERVATIVE_SAMPLING = SamplingParams(temperature=0.2, top_p=0.9, max_new_tokens=256)


def model_sampling(path: Path | str) -> SamplingParams:
    """The sampling the model's authors ship in generation_config.json, else CONSERVATIVE_SAMPLING."""
    try:
        config = json.loads((Path(path) / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return CONSERVATIVE_SAMPLING
    if not isinstance(config, dict):
        return CONSERVATIVE_SAMPLING
    changes: dict[str, object] = {}
    for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
        if config.get(name) is not None:
            changes[name] = config[name]
    if config.get("do_sample") is False:
        changes["temperature"] = 0.0
    if not changes:
        return CONSERVATIVE_SAMPLING
    try:
        return CONSERVATIVE_SAMPLING.replace(**changes).validated()
    except SamplingError:
        return CONSERVATIVE_SAMPLING


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # NaN != NaN


def _check(ok: bool, name: str, value: object, why: str) -> None:
    if not ok:
        raise SamplingError(f"{name} {value!r} {why}")


class Sampler:
    """Chooses a token from logits: repetition penalty, temperature, top-k, top-p, then a seeded draw."""

    def __init__(self, params: SamplingParams):
        params.validated()
        self.params = params
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def choose(self, logits: torch.Tensor, history: list[int]) -> int:
        """`logits` [vocab] float32 for the next position; `history` is every token so far."""
        logits = self._shaped(logits, history)
        if self.params.greedy:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def check_draft(self, logits: torch.Tensor, history: list[int], draft: int) -> tuple[int, bool]:
        """The token for this position given a guessed `draft`, and whether the guess stands.

        Greedy: the guess stands when it is the most likely token. Sampling: it stands with the
        probability the model gives it, else a token is drawn with the guess excluded; for a guess
        made without a model (one token, probability 1) that leaves the model's distribution as it is.
        """
        logits = self._shaped(logits, history)
        if self.params.greedy:
            token = int(torch.argmax(logits))
            return token, token == draft
        probs = torch.softmax(logits, dim=-1)
        if float(torch.rand((), generator=self.generator)) < float(probs[draft]):
            return draft, True
        probs[draft] = 0.0
        if float(probs.sum()) <= 0.0:  # the guess held all the mass yet lost the draw: rounding
            return draft, True
        return int(torch.multinomial(probs / probs.sum(), 1, generator=self.generator)), False

    def _shaped(self, logits: torch.Tensor, history: list[int]) -> torch.Tensor:
        """Logits after repetition penalty, temperature, top-k and top-p (as they are, when greedy)."""
        p = self.params
        logits = logits.float().cpu().clone()  # the generator and the token ids live on the CPU
        if p.repetition_penalty != 1.0 and history:
            seen = torch.tensor(sorted(set(history)), dtype=torch.long)
            scores = logits[seen]
            logits[seen] = torch.where(scores < 0, scores * p.repetition_penalty, scores / p.repetition_penalty)
        if p.greedy:
            return logits
        logits = logits / p.temperature
        if p.top_k and p.top_k < logits.numel():
            kth = torch.topk(logits, p.top_k).values[-1]
            logits[logits < kth] = float("-inf")
        if p.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            # drop a token once the tokens before it already hold top_p of the mass (keep at least one)
            drop = probs.cumsum(-1) - probs > p.top_p
            logits[order[drop]] = float("-inf")
        return logits


def eos_token_ids(tokenizer, config=None) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None), getattr(config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, Iterable):
            ids.update(int(i) for i in source)
    return ids


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a conversation through the tokenizer's chat template, ready for the reply."""
    if not getattr(tokenizer, "chat_template", None):
        raise CorollaError("this model's tokenizer has no chat template; use a plain prompt instead")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


class Decoder:
    """One generation as a state machine: feed it each block-stack output, it gives the next input.

    `start()` returns the prompt's embeddings; `advance(out)` samples from the output and returns
    the next input [1, tokens, hidden], or None when generation has finished (EOS, a stop string,
    or max new tokens). With `speculative` k > 0 each input also carries up to k guessed tokens
    (prompt lookup); `advance` keeps the guesses the model agrees with and, when it rejected some,
    sets `restart`: the position the next input starts at (the blocks drop their cache from there).
    """

    def __init__(self, head: ClientHead, tokenizer, params: SamplingParams, prompt_ids: list[int],
                 on_text: Callable[[str], None] | None = None, eos_ids: set[int] | None = None,
                 speculative: int = 0, draft: Callable[[list[int], int], list[int]] = lookup_draft,
                 prefix: torch.Tensor | None = None):
        if not prompt_ids:
            raise CorollaError("the prompt is empty")
        if not (_is_int(speculative) and 0 <= speculative <= MAX_SPECULATIVE):
            raise SamplingError(f"speculative {speculative!r} must be a whole number from 0 (off) to {MAX_SPECULATIVE}")
        self.head = head
        self.tokenizer = tokenizer
        self.params = params
        self.sampler = Sampler(params)
        self.prompt_ids = list(prompt_ids)
        self.token_ids: list[int] = []
        self.on_text = on_text
        self.eos_ids = eos_token_ids(tokenizer, head.config) if eos_ids is None else eos_ids
        self.text = ""
        self.finish_reason: str | None = None  # "eos" | "stop" | "length"
        self.speculative = speculative
        self.draft = draft  # (context ids, at most k) -> guessed next tokens
        self.restart: int | None = None  # where the next input starts, when not right after the last
        self.rounds = 0  # outputs seen (round trips through the blocks)
        self.drafted = self.accepted = 0  # guessed tokens sent, and those the model agreed with
        self._drafts: list[int] = []  # the guesses in the input now on its way
        self._sent_end = 0  # cache length on the blocks once the input now on its way is in

        self.prefix = prefix  # [positions, hidden] tuned soft prompt put before the prompt's embeddings
        self.shown: int | None = None  # tokens whose text may be reported (None: all): see show_checked

    @property
    def max_length(self) -> int:
        """Tokens a session must hold: a tuned prefix, the prompt, and every new token that is fed back
        (guesses are cut short so that they never reach past it)."""
        prefix = 0 if self.prefix is None else self.prefix.shape[0]
        return prefix + len(self.prompt_ids) + self.params.max_new_tokens

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def tokens_per_round(self) -> float:
        """New tokens per round trip through the blocks (1.0 without speculation, more with it)."""
        return len(self.token_ids) / max(self.rounds, 1)

    @property
    def prompt_length(self) -> int:
        """Positions before the first new token: the tuned prefix and the prompt."""
        return (0 if self.prefix is None else self.prefix.shape[0]) + len(self.prompt_ids)

    def start(self) -> torch.Tensor:
        embeds = self.head.embed(torch.tensor([self.prompt_ids]))
        if self.prefix is not None:
            embeds = torch.cat([self.prefix.to(embeds.dtype).unsqueeze(0), embeds], dim=1)
        self._sent_end = embeds.shape[1]
        return embeds

    def rollback(self, position: int) -> torch.Tensor:
        """Forget what the outputs at `position` and later decided; the input from there on [1, tokens,
        hidden] (`restart` says where it starts). Token j came from the output at prompt_length - 1 + j."""
        p0 = self.prompt_length
        keep = min(len(self.token_ids), max(0, position - p0 + 1))
        if self.shown is not None and keep < self.shown:
            raise CorollaError(f"cannot take back {self.shown - keep} tokens already shown")
        self.token_ids, self.finish_reason, self._drafts = self.token_ids[:keep], None, []
        self.restart = p0 + keep - 1 if keep else min(position, p0 - 1)
        # No token left: the prompt itself ran through a liar; from that part of the prompt on.
        hidden = self.head.embed(torch.tensor([self.token_ids[-1:]])) if keep else self.start()[:, self.restart:]
        self._sent_end = self.restart + hidden.shape[1]
        return hidden

    def show_checked(self, position: int | None) -> None:
        """The blocks' outputs before `position` are checked (None: show all): report the text of the
        tokens they decided. Text of unchecked tokens is held back, so a rollback never takes back
        text a reader has seen."""
        self.shown = None if position is None else max(0, position - self.prompt_length + 1)
        self._emit_text()

    def advance(self, out: torch.Tensor) -> torch.Tensor | None:
        drafts, n = self._drafts, len(self._drafts)
        logits = self.head.logits(out[:, -(n + 1):])[0]  # one row per guess, one after them
        self.rounds += 1
        kept = 0
        for i in range(n + 1):
            history = self.prompt_ids + self.token_ids
            if i < n:
                token, agreed = self.sampler.check_draft(logits[i], history, drafts[i])
            else:
                token, agreed = self.sampler.choose(logits[i], history), False
            self._take(token)
            if self.done or not agreed:
                break
            kept += 1
        self.accepted += kept
        if self.done:
            return None
        valid = self._sent_end - (n - kept)  # cache entries of rejected guesses are dropped
        self.restart = valid if kept < n else None
        room = self.params.max_new_tokens - len(self.token_ids)
        self._drafts = self.draft(self.prompt_ids + self.token_ids, min(self.speculative, room - 1))[:room - 1]
        self.drafted += len(self._drafts)
        tokens = [self.token_ids[-1], *self._drafts]
        self._sent_end = valid + len(tokens)
        return self.head.embed(torch.tensor([tokens]))

    def _take(self, token: int) -> None:
        """Append one sampled token (or finish on EOS, a stop string, or the length limit)."""
        if token in self.eos_ids:
            self.finish_reason = "eos"
            return
        self.token_ids.append(token)
        self._emit_text()
        if self.finish_reason is None and len(self.token_ids) >= self.params.max_new_tokens:
            self.finish_reason = "length"

    def _text_of(self, ids: list[int]) -> tuple[str, bool]:
        """The text of `ids`, cut before the first stop string, and whether one was found."""
        full = self.tokenizer.decode(ids, skip_special_tokens=True)
        cuts = [full.find(stop) for stop in self.params.stop if stop and stop in full]
        return (full[:min(cuts)], True) if cuts else (full, False)

    def _emit_text(self) -> None:
        full, stopped = self._text_of(self.token_ids)
        if stopped:
            self.finish_reason = "stop"
        held = self.shown is not None and self.shown < len(self.token_ids)
        if held:  # the text of checked tokens only (a stop string above still ends generation)
            full = self._text_of(self.token_ids[:self.shown])[0]
        if full.endswith("\ufffd") and (held or not self.done):  # half of a multi-byte character: wait
            return
        if full.startswith(self.text):
            delta = full[len(self.text):]
        else:  # the tokenizer re-spaced earlier text; only ever append
            delta = ""
        self.text = self.text + delta if delta else self.text
        if delta and self.on_text is not None:
            self.on_text(delta)


async def decode(decoder: Decoder, forward: Callable[..., Awaitable[torch.Tensor]], *,
                 offload: Callable[[Callable[[], torch.Tensor | None]], Awaitable[torch.Tensor | None]] | None = None,
                 on_step: Callable[[Decoder], None] | None = None,
                 checked: Callable[[bool], Awaitable[int]] | None = None) -> str:
    """The decoding loop, wherever the blocks run: embed, run every block, sample, repeat; the text.

    `forward` runs hidden states [batch, tokens, hidden] through every block, keeping the caches
    (a route through the swarm, or spans in this process); with `start=` it first drops the cache
    entries from that position on (rejected guesses of speculative decoding). `offload(fn)` runs the head's work off
    the caller's event loop (trio.to_thread.run_sync, say); `on_step` sees the decoder after each token.
    `checked(final)`, for blocks whose outputs are checked after the fact: the position before which
    they are (text is shown up to there), or Rollback when some were wrong; final=True: finish checking.
    """
    hidden: torch.Tensor | None = decoder.start()
    if checked is not None:
        decoder.show_checked(0)
    while hidden is not None:
        try:
            # A speculative step that rejected guesses starts earlier than the blocks' caches end.
            out = await (forward(hidden) if decoder.restart is None else forward(hidden, start=decoder.restart))
            hidden = decoder.advance(out) if offload is None else await offload(functools.partial(decoder.advance, out))
            if checked is not None:  # at the end, every output is checked before the loop may stop
                decoder.show_checked(await checked(hidden is None))
        except Rollback as back:
            hidden = decoder.rollback(back.position)
        if on_step is not None:
            on_step(decoder)
    if checked is not None:
        decoder.show_checked(None)
    return decoder.text


def decode_in_process(decoder: Decoder, forward: Callable[..., torch.Tensor]) -> str:
    """decode() over blocks that answer at once (a LocalChain): the same loop, without an event loop."""

    async def blocks(hidden: torch.Tensor, **start: int) -> torch.Tensor:
        return forward(hidden, **start)

    loop = decode(decoder, blocks)
    try:
        loop.send(None)
    except StopIteration as finished:
        return finished.value
    loop.close()
    raise CorollaError("decode_in_process() was given blocks that wait; use decode() in an event loop")
