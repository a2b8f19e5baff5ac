"""Routes through spans loaded in this process (core.chain.LocalChain): the chat without a swarm."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import torch
import trio

from corolla.app.swarm.route import Hop, RouteListener
from corolla.core.chain import LocalChain


class LocalRoute:
    def __init__(self, chain: LocalChain, hops: list[Hop]) -> None:
        self._chain = chain
        self.hops = hops

    async def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return await trio.to_thread.run_sync(self._chain.forward, hidden)


class LocalRouteFactory:
    """Loads `spans` of the model at `path` on first use; one session at a time."""

    def __init__(self, path: Path, spans: list[tuple[int, int]]) -> None:
        self.path = path
        self.spans = spans
        self._chain: LocalChain | None = None
        self._lock = trio.Lock()

    @asynccontextmanager
    async def open(self, max_length: int, listener: RouteListener) -> AsyncIterator[LocalRoute]:
        async with self._lock:
            if self._chain is None:
                self._chain = await trio.to_thread.run_sync(LocalChain.load, self.path, self.spans)
            chain = self._chain
            hops = [Hop("this computer", a, b, 0.0) for a, b in self.spans]
            await trio.to_thread.run_sync(chain.open, max_length)
            listener.on_route(hops)
            try:
                yield LocalRoute(chain, hops)
            finally:
                chain.close()

    async def aclose(self) -> None:
        self._chain = None
