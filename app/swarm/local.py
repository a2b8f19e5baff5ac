"""Routes through spans loaded in this process (core.chain.LocalChain): generation without a swarm."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import torch
import trio

from corolla.app.errors import ChatBackendError
from corolla.app.swarm.route import RouteListener
from corolla.core.chain import LocalChain
from corolla.p2p.records import ServerInfo
from corolla.p2p.routing import RouteHop

THIS_COMPUTER = "this computer"


class LocalRoute:
    def __init__(self, chain: LocalChain, route: list[RouteHop], deep_prompts: torch.Tensor | None = None) -> None:
        self._chain = chain
        self.route = route
        self.deep_prompts = deep_prompts

    async def forward(self, hidden: torch.Tensor, start: int | None = None) -> torch.Tensor:
        return await trio.to_thread.run_sync(self._chain.forward, hidden, start, self.deep_prompts)


def refuse_adapter(adapter: str | None) -> None:
    """Routes that run blocks in this process apply no server's adapter: say so (ChatBackendError)."""
    if adapter is not None:
        raise ChatBackendError(f"the adapter {adapter!r} is offered by the swarm's servers; this route runs the "
                               "blocks on this computer, so choose no adapter or use the swarm")


class LocalRouteFactory:
    """Loads `spans` of the model at `path` on first use; one session at a time. `deep_prompts`
    [num_blocks, P, hidden]: added before every block to the first P positions (cached like the rest)."""

    def __init__(self, path: Path, spans: list[tuple[int, int]], deep_prompts: torch.Tensor | None = None,
                 quant: str = "none") -> None:
        self.path = path
        self.spans = spans
        self.quant = quant  # how the blocks' weights are quantized (core/quantization.py)
        self.deep_prompts = deep_prompts
        self.applies_deep_prompts = deep_prompts is not None
        self._chain: LocalChain | None = None
        self._lock = trio.Lock()

    @asynccontextmanager
    async def open(self, max_length: int, listener: RouteListener, adapter: str | None = None,
                   prompt_tokens: int = 1) -> AsyncIterator[LocalRoute]:
        refuse_adapter(adapter)
        async with self._lock:
            if self._chain is None:
                self._chain = await trio.to_thread.run_sync(
                    functools.partial(LocalChain.load, self.path, self.spans, quant=self.quant))
            chain = self._chain
            route = [RouteHop(ServerInfo(THIS_COMPUTER, self.path.name, "", a, b), a, b) for a, b in self.spans]
            await trio.to_thread.run_sync(chain.open, max_length)
            listener.on_route(route)
            try:
                yield LocalRoute(chain, route, self.deep_prompts)
            finally:
                chain.close()

    async def aclose(self) -> None:
        self._chain = None
