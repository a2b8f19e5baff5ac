"""Routes through the swarm: a p2p InferenceSession, with its failovers reported as reroutes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch

from corolla.app.errors import ChatBackendError
from corolla.app.swarm.connection import SwarmConnection
from corolla.app.swarm.route import Hop, RouteListener
from corolla.p2p.errors import NoRouteError
from corolla.p2p.records import format_blocks
from corolla.p2p.routing import RouteHop
from corolla.p2p.session import FailoverEvent, InferenceSession, WaitingEvent


def hops_of(route: list[RouteHop]) -> list[Hop]:
    return [Hop(h.peer_id, h.start, h.end, h.server.rtt_ms or None) for h in route]


def describe_event(event: FailoverEvent | WaitingEvent) -> str:
    """A sentence for the user about a failover or a wait for missing blocks."""
    if isinstance(event, FailoverEvent):
        to = ", ".join(p[-8:] for p in event.to_peers)
        return (f"server …{event.from_peer[-8:]} failed ({event.reason}); blocks {event.start}–{event.end - 1} "
                f"moved to …{to}, {event.tokens} tokens replayed in {event.seconds:.2f} s")
    if event.full:
        return (f"the servers holding blocks {format_blocks(event.missing)} are full; "
                f"waiting for room ({event.waited:.0f} s so far)")
    return (f"no server holds blocks {format_blocks(event.missing)}; "
            f"waiting for one to join ({event.waited:.0f} s so far)")


class SwarmRoute:
    def __init__(self, session: InferenceSession) -> None:
        self._session = session

    @property
    def hops(self) -> list[Hop]:
        return hops_of(self._session.route)

    async def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return await self._session.forward(hidden)


class SwarmRouteFactory:
    def __init__(self, connection: SwarmConnection) -> None:
        self.connection = connection

    @asynccontextmanager
    async def open(self, max_length: int, listener: RouteListener) -> AsyncIterator[SwarmRoute]:
        client = await self.connection.client()
        holder: list[InferenceSession] = []

        def on_event(event: FailoverEvent | WaitingEvent) -> None:
            if isinstance(event, FailoverEvent) and holder:
                listener.on_reroute(describe_event(event), hops_of(holder[0].route))
            else:
                listener.on_notice(describe_event(event))

        try:
            session = InferenceSession(client, max_length, on_event=on_event)
            holder.append(session)
            async with session:
                listener.on_route(hops_of(session.route))
                yield SwarmRoute(session)
        except NoRouteError as exc:
            raise ChatBackendError(str(exc)) from None

    async def aclose(self) -> None:
        await self.connection.aclose()
