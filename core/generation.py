"""Sampling and the generation loop, independent of where the blocks run (local spans or a swarm)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from corolla.core.errors import CorollaError
from corolla.core.head import ClientHead


@dataclass
class SamplingParams:
    """How to pick each next token. `greedy` ignores temperature, top-k and top-p."""

    max_new_tokens: int = 64
    greedy: bool = False
    temperature: float = 0.7
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    repetition_penalty: float = 1.0  # 1.0: off
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise CorollaError("max new tokens must be at least 1")
        if not self.greedy and self.temperature <= 0:
            raise CorollaError("temperature must be positive (use greedy decoding for temperature 0)")
        if self.top_k < 0:
            raise CorollaError("top-k must be 0 (off) or positive")
        if not 0 < self.top_p <= 1:
            raise CorollaError("top-p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise CorollaError("repetition penalty must be positive (1.0 is off)")


class Sampler:
    """Chooses a token from logits: repetition penalty, temperature, top-k, top-p, then a seeded draw."""

    def __init__(self, params: SamplingParams):
        params.validate()
        self.params = params
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def choose(self, logits: torch.Tensor, history: list[int]) -> int:
        """`logits` [vocab] float32 for the next position; `history` is every token so far."""
        p = self.params
        logits = logits.float().clone()
        if p.repetition_penalty != 1.0 and history:
            seen = torch.tensor(sorted(set(history)), dtype=torch.long)
            scores = logits[seen]
            logits[seen] = torch.where(scores < 0, scores * p.repetition_penalty, scores / p.repetition_penalty)
        if p.greedy:
            return int(torch.argmax(logits))
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
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


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

    `start()` returns the prompt's embeddings; `advance(out)` samples a token from the last output
    position and returns the next input [1, 1, hidden], or None when generation has finished
    (EOS, a stop string, or max new tokens).
    """

    def __init__(self, head: ClientHead, tokenizer, params: SamplingParams, prompt_ids: list[int],
                 on_text: Callable[[str], None] | None = None, eos_ids: set[int] | None = None):
        if not prompt_ids:
            raise CorollaError("the prompt is empty")
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

    @property
    def max_length(self) -> int:
        """Tokens a session must hold: the prompt plus every new token that is fed back."""
        return len(self.prompt_ids) + self.params.max_new_tokens

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def start(self) -> torch.Tensor:
        return self.head.embed(torch.tensor([self.prompt_ids]))

    def advance(self, out: torch.Tensor) -> torch.Tensor | None:
        logits = self.head.logits(out[:, -1:])[0, -1]
        token = self.sampler.choose(logits, self.prompt_ids + self.token_ids)
        if token in self.eos_ids:
            self.finish_reason = "eos"
            return None
        self.token_ids.append(token)
        self._emit_text()
        if self.finish_reason is None and len(self.token_ids) >= self.params.max_new_tokens:
            self.finish_reason = "length"
        if self.done:
            return None
        return self.head.embed(torch.tensor([[token]]))

    def _emit_text(self) -> None:
        full = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        for stop in self.params.stop:
            at = full.find(stop)
            if stop and at != -1:
                full = full[:at]
                self.finish_reason = "stop"
        if full.endswith("\ufffd") and not self.done:  # half of a multi-byte character: wait for the rest
            return
        if full.startswith(self.text):
            delta = full[len(self.text):]
        else:  # the tokenizer re-spaced earlier text; only ever append
            delta = ""
        self.text = self.text + delta if delta else self.text
        if delta and self.on_text is not None:
            self.on_text(delta)


BlockStack = Callable[[torch.Tensor], torch.Tensor]


def generate(decoder: Decoder, run_blocks: BlockStack) -> str:
    """Run a decoder to the end through `run_blocks` (hidden in -> hidden out, keeping caches)."""
    hidden: torch.Tensor | None = decoder.start()
    while hidden is not None:
        hidden = decoder.advance(run_blocks(hidden))
    return decoder.text
