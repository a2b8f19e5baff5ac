"""Routes through the swarm: a p2p InferenceSession, with its failovers reported as reroutes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from corolla.app.errors import ChatBackendError
from corolla.app.swarm.connection import SwarmConnection
from corolla.app.swarm.route import RouteListener
from corolla.core.generation import Decoder, decode
from corolla.p2p.errors import NoRouteError
from corolla.p2p.session import FailoverEvent, InferenceSession, WaitingEvent
from corolla.p2p.spotcheck import DEFAULT_RATE, SpotCheck


class SwarmRouteFactory:
    """Inference sessions through the swarm; `spot_check` is the fraction of steps a second server
    recomputes (0: off; a hop's first step is always checked when on)."""

    def __init__(self, connection: SwarmConnection, spot_check: float = DEFAULT_RATE) -> None:
        self.connection = connection
        self.spot_check = spot_check

    @asynccontextmanager
    async def open(self, max_length: int, listener: RouteListener) -> AsyncIterator[InferenceSession]:
        client = await self.connection.client()
        holder: list[InferenceSession] = []

        def on_event(event: FailoverEvent | WaitingEvent) -> None:
            if isinstance(event, FailoverEvent):
                listener.on_reroute(event, list(holder[0].route) if holder else [])
            else:
                listener.on_wait(event)

        try:
            checks = SpotCheck(self.spot_check, on_caught=listener.on_liar) if self.spot_check > 0 else None
            session = InferenceSession(client, max_length, on_event=on_event, spot_check=checks)
            holder.append(session)
            async with session:
                listener.on_route(list(session.route))
                yield session
        except NoRouteError as exc:
            raise ChatBackendError(str(exc)) from None

    async def aclose(self) -> None:
        await self.connection.aclose()


async def generate_through_swarm(path: Path, decoder: Decoder, initial_peers: list[str], *,
                                 spot_check: float = DEFAULT_RATE, swarm_key: str | None = None,
                                 listener: RouteListener | None = None) -> str:
    """Run a ready-made `decoder` to the end through the swarm (tests and benchmarks that build their
    own decoder; the app's replies go through app/chat/reply.py); the text."""
    async with trio.open_nursery() as nursery:
        routes = SwarmRouteFactory(SwarmConnection(initial_peers, lambda: path, lambda: nursery, swarm_key),
                                   spot_check=spot_check)
        try:
            async with routes.open(decoder.max_length, listener or RouteListener()) as route:
                return await decode(decoder, route.forward, checked=route.checked)
        finally:
            await routes.aclose()
            nursery.cancel_scope.cancel()
