"""The reference route for deep prompts: every step runs the whole sequence so far through the blocks
with the prompts added before each block, and no attention cache is kept anywhere.

It computes exactly what training computed (core/tuning, the stateless forward of the backward
protocol), so tests check the cached routes against it: `corolla generate --tuned` with deep prompts
uses cached sessions (app/swarm/local.py and remote.py, `deep_prompts=`), whose first steps carry the
prompts to the servers. Each new token here costs a pass over the whole sequence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import torch
import trio

from corolla.app.errors import ChatBackendError
from corolla.app.swarm.connection import SwarmConnection
from corolla.app.swarm.route import RouteListener
from corolla.p2p.records import ServerInfo
from corolla.p2p.routing import RouteHop

Run = Callable[[torch.Tensor], Awaitable[torch.Tensor]]


class RecomputingRoute:
    """Keeps the sequence's inputs; each forward runs all of them and returns the new positions."""

    def __init__(self, run: Run, route: list[RouteHop]) -> None:
        self._run, self.route = run, route
        self._inputs: list[torch.Tensor] = []

    async def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        self._inputs.append(hidden)
        out = await self._run(torch.cat(self._inputs, dim=1))
        return out[:, -hidden.shape[1]:]


class DeepPromptRouteFactory:
    """Deep prompts [num_blocks, P, hidden] applied through the swarm (`connection`) or, without
    one, through every block loaded in this process from `path`."""

    applies_deep_prompts = True

    def __init__(self, deep: torch.Tensor, path: Path, connection: SwarmConnection | None = None) -> None:
        self.deep, self.path, self.connection = deep, path, connection
        self._local = None

    @asynccontextmanager
    async def open(self, max_length: int, listener: RouteListener, adapter: str | None = None,
                   prompt_tokens: int = 1) -> AsyncIterator[RecomputingRoute]:
        if adapter is not None:
            raise ChatBackendError("deep prompts and a LoRA adapter cannot be combined yet; choose one of them")
        if self.connection is not None:
            from corolla.p2p.remote_blocks import RemoteBlocks

            blocks = RemoteBlocks(await self.connection.client())
            route = await blocks.route(0, blocks.num_blocks)

            async def run(x: torch.Tensor) -> torch.Tensor:
                return (await blocks.forward(x, self.deep.to(x.dtype)))[0]
        else:
            if self._local is None:
                self._local = await trio.to_thread.run_sync(self._load_local)
            local = self._local
            n = self.deep.shape[0]
            route = [RouteHop(ServerInfo("this computer", self.path.name, "", 0, n), 0, n)]

            async def run(x: torch.Tensor) -> torch.Tensor:
                def compute() -> torch.Tensor:
                    with torch.no_grad():
                        return local(x, self.deep.to(x.dtype))

                return await trio.to_thread.run_sync(compute)
        listener.on_route(route)
        yield RecomputingRoute(run, route)

    def _load_local(self):
        from corolla.core.span import Span
        from corolla.core.tuning.training import LocalBlocks

        return LocalBlocks([Span.load(self.path, 0, self.deep.shape[0])])

    async def aclose(self) -> None:
        if self.connection is not None:
            await self.connection.aclose()
        self._local = None
