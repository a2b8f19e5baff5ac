"""What a reply needs from whatever carries hidden states through the blocks: a route of spans.

`RouteFactory.open()` gives an `InferenceRoute`: an open inference session over every block, whose
`forward()` sends hidden states through all spans and returns the last span's output. Spans in this
process (app/swarm/local.py) and servers of the swarm (app/swarm/remote.py: a p2p InferenceSession)
both fit. Route and reroute events go to a `RouteListener`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import torch

from corolla.p2p.routing import RouteHop
from corolla.p2p.session import FailoverEvent, WaitingEvent
from corolla.p2p.spotcheck import LiarCaught


@dataclass(frozen=True)
class RouteListener:
    """Callbacks a route calls from the event loop's thread, as things happen."""

    on_route: Callable[[list[RouteHop]], None] = lambda hops: None
    on_reroute: Callable[[FailoverEvent, list[RouteHop]], None] = lambda event, hops: None
    on_wait: Callable[[WaitingEvent], None] = lambda event: None  # no server holds (or has room for) some blocks
    on_liar: Callable[[LiarCaught], None] = lambda caught: None  # a spot check caught wrong activations
    # how each server of the route is reached, by peer id ('direct', 'hole-punched', 'relayed via …'),
    # when that changes (a hole punch replaces a relayed connection a few seconds after it opens)
    on_paths: Callable[[dict[str, str]], None] = lambda paths: None


class InferenceRoute(Protocol):
    @property
    def route(self) -> list[RouteHop]:
        """The spans, in order, and who serves each."""
        ...

    async def forward(self, hidden: torch.Tensor, start: int | None = None) -> torch.Tensor:
        """Run `hidden` [batch, new_tokens, hidden_size] through every block; same shape back.
        `start`: the position the new tokens take, dropping the caches from there (None: append)."""
        ...


class RouteFactory(Protocol):
    def open(self, max_length: int, listener: RouteListener, adapter: str | None = None,
             prompt_tokens: int = 1) -> AbstractAsyncContextManager[InferenceRoute]:
        """An inference session with room for `max_length` tokens; closed on exit. `adapter`: the LoRA
        adapter the servers apply, by name (None: the base model); routes that cannot refuse it.
        `prompt_tokens`: the first step's length (a swarm routes a long prompt off slow links)."""
        ...

    async def aclose(self) -> None:
        """Release what the factory holds (network host, loaded spans)."""
        ...
