"""A chain of in-process spans with the same open/step/close shape as a route through the swarm."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Self

import torch

from corolla.core.errors import CorollaError
from corolla.core.span import Span, SpanRuntime


def parse_spans(text: str, num_blocks: int) -> list[tuple[int, int]]:
    """'0:10,10:20,20:30' -> [(0, 10), (10, 20), (20, 30)]; they must cover 0..num_blocks in order."""
    spans = []
    for part in text.split(","):
        try:
            a, b = (int(x) for x in part.strip().split(":"))
        except ValueError:
            raise CorollaError(f"bad span {part!r}: write spans as START:END, e.g. 0:10,10:20") from None
        spans.append((a, b))
    expected = 0
    for a, b in spans:
        if a != expected or b <= a:
            raise CorollaError(f"spans must be contiguous and increasing from 0; {a}:{b} does not follow {expected}")
        expected = b
    if expected != num_blocks:
        raise CorollaError(f"spans end at block {expected} but the model has {num_blocks} blocks")
    return spans


class LocalChain:
    """Spans in this process, run one after another, each with its own session cache."""

    def __init__(self, runtimes: list[SpanRuntime]):
        self.runtimes = runtimes
        self.session_id: str | None = None

    @classmethod
    def load(cls, path: Path | str, spans: list[tuple[int, int]], dtype: torch.dtype = torch.float32,
             max_cache_tokens: int = 8192, quant: str = "none") -> LocalChain:
        """`quant`: how the blocks' weights are quantized (core/quantization.py)."""
        return cls([SpanRuntime(Span.load(path, a, b, dtype=dtype, quant=quant), max_cache_tokens) for a, b in spans])

    def open(self, max_length: int) -> None:
        self.session_id = uuid.uuid4().hex
        for rt in self.runtimes:
            rt.open_session(self.session_id, max_length)

    def forward(self, hidden: torch.Tensor, start: int | None = None,
                prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states through every span; `start`: the position they take (drops the caches from there);
        `prompts`: deep prompts of every block of the model [num_blocks, P, hidden]."""
        if self.session_id is None:
            raise CorollaError("open() the chain before stepping it")
        for rt in self.runtimes:
            mine = None if prompts is None else prompts[rt.span.start:rt.span.end]
            hidden = rt.forward(self.session_id, hidden, start, mine)
        return hidden

    def close(self) -> None:
        if self.session_id is not None:
            for rt in self.runtimes:
                rt.close_session(self.session_id)
            self.session_id = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
