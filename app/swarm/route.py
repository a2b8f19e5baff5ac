"""What the chat needs from whatever carries hidden states through the blocks: a route of spans.

`RouteFactory.open()` gives an `InferenceRoute` (an open inference session over every block);
`step()` sends hidden states through all spans and returns the last span's output. The local
implementation runs spans in-process; the swarm implementation goes through servers. Route and
reroute events go to a `RouteListener`, which the chat backend turns into Qt signals.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class Hop:
    """One span on the route: which peer serves blocks [start, end), and its latency."""

    peer: str
    start: int
    end: int
    latency_ms: float | None = None

    @property
    def blocks(self) -> str:
        return f"{self.start}–{self.end - 1}"


@dataclass(frozen=True)
class RouteListener:
    """Callbacks a route calls from the trio thread (the backend forwards them to the GUI)."""

    on_route: Callable[[list[Hop]], None] = lambda hops: None
    on_reroute: Callable[[str, list[Hop]], None] = lambda notice, hops: None
    on_notice: Callable[[str], None] = lambda notice: None  # e.g. waiting for missing blocks


class InferenceRoute(Protocol):
    hops: list[Hop]

    async def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Run `hidden` [batch, new_tokens, hidden_size] through every block; same shape back."""
        ...


class RouteFactory(Protocol):
    def open(self, max_length: int, listener: RouteListener) -> AbstractAsyncContextManager[InferenceRoute]:
        """An inference session with room for `max_length` tokens; closed on exit."""
        ...

    async def aclose(self) -> None:
        """Release what the factory holds (network host, loaded spans)."""
        ...
