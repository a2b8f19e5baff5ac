"""Routes through the swarm: a p2p InferenceSession, with its failovers reported as reroutes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import torch
import trio

from corolla.app.errors import ChatBackendError
from corolla.app.swarm.connection import SwarmConnection
from corolla.app.swarm.route import RouteListener
from corolla.app.swarm.snapshot import reached_by
from corolla.core.generation import Decoder, decode
from corolla.p2p.errors import AdapterNotOfferedError, NoRouteError
from corolla.p2p.host import Peer
from corolla.p2p.session import FailoverEvent, InferenceSession, WaitingEvent
from corolla.p2p.spotcheck import DEFAULT_RATE, SpotCheck

PATHS_PERIOD = 1.0  # s between looks at how the route's servers are reached


class SwarmRouteFactory:
    """Inference sessions through the swarm; `spot_check` is the fraction of steps after which a
    second server checks a hop's outputs since its last check (0: off; a hop's first step is always
    checked when on, and its outputs at the latest every SpotCheck.held); `push`: servers pass each
    step to the next server on the route themselves (k+1 one-way delays a token instead of 2k);
    `adapter`: the LoRA adapter the sessions opened from now on use, by the name servers offer it
    under (None: the base model); `deep_prompts` [num_blocks, P, hidden]: sent with the steps that
    reach positions < P, where the servers add them before every block (the rest of the sequence
    reuses the cached keys and values)."""

    def __init__(self, connection: SwarmConnection, spot_check: float = DEFAULT_RATE, push: bool = True,
                 adapter: str | None = None, deep_prompts: torch.Tensor | None = None) -> None:
        self.connection = connection
        self.spot_check = spot_check
        self.push = push
        self.adapter = adapter
        self.deep_prompts = deep_prompts
        self.applies_deep_prompts = deep_prompts is not None

    @asynccontextmanager
    async def open(self, max_length: int, listener: RouteListener, adapter: str | None = None,
                   prompt_tokens: int = 1) -> AsyncIterator[InferenceSession]:
        """`prompt_tokens`: the first step's length, when known (a long prompt is routed off slow links)."""
        adapter = self.adapter if adapter is None else adapter
        client = await self.connection.client()
        holder: list[InferenceSession] = []

        def on_event(event: FailoverEvent | WaitingEvent) -> None:
            if isinstance(event, FailoverEvent):
                listener.on_reroute(event, list(holder[0].route) if holder else [])
            else:
                listener.on_wait(event)

        try:
            checks = SpotCheck(self.spot_check, on_caught=listener.on_liar) if self.spot_check > 0 else None
            session = InferenceSession(client, max_length, on_event=on_event, spot_check=checks, push=self.push,
                                       adapter=adapter, deep_prompts=self.deep_prompts, prompt_tokens=prompt_tokens)
            holder.append(session)
            async with session, trio.open_nursery() as watch:
                listener.on_route(list(session.route))
                watch.start_soon(_report_paths, client.peer, session, listener)
                yield session
                watch.cancel_scope.cancel()
        except (NoRouteError, AdapterNotOfferedError) as exc:
            raise ChatBackendError(str(exc)) from None

    async def offered_adapters(self) -> list[str]:
        """The LoRA adapters the live servers offer, by name."""
        client = await self.connection.client()
        return sorted({name for s in await client.servers() for name in s.adapters})

    async def aclose(self) -> None:
        await self.connection.aclose()


async def _report_paths(peer: Peer, session: InferenceSession, listener: RouteListener) -> None:
    """Tell the listener how the route's servers are reached, now and whenever it changes."""
    last: dict[str, str] | None = None
    while True:
        paths = reached_by(peer, [hop.server for hop in session.route])
        if paths != last:
            listener.on_paths(paths)
            last = paths
        await trio.sleep(PATHS_PERIOD)


async def generate_through_swarm(path: Path, decoder: Decoder, initial_peers: list[str], *,
                                 spot_check: float = DEFAULT_RATE, swarm_key: str | None = None,
                                 listener: RouteListener | None = None, push: bool = True,
                                 adapter: str | None = None) -> str:
    """Run a ready-made `decoder` to the end through the swarm (tests and benchmarks that build their
    own decoder; the app's replies go through app/chat/reply.py); the text."""
    async with trio.open_nursery() as nursery:
        routes = SwarmRouteFactory(SwarmConnection(initial_peers, lambda: path, lambda: nursery, swarm_key),
                                   spot_check=spot_check, push=push, adapter=adapter)
        try:
            async with routes.open(decoder.max_length, listener or RouteListener(),
                                   prompt_tokens=len(decoder.prompt_ids)) as route:
                return await decode(decoder, route.forward, checked=route.checked)
        finally:
            await routes.aclose()
            nursery.cancel_scope.cancel()
