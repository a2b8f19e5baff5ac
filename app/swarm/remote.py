"""Routes through the swarm: a p2p InferenceSession, with its failovers reported as reroutes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from corolla.app.errors import ChatBackendError
from corolla.app.swarm.connection import SwarmConnection
from corolla.app.swarm.route import RouteListener
from corolla.p2p.errors import NoRouteError
from corolla.p2p.session import FailoverEvent, InferenceSession, WaitingEvent


class SwarmRouteFactory:
    def __init__(self, connection: SwarmConnection) -> None:
        self.connection = connection

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
            session = InferenceSession(client, max_length, on_event=on_event)
            holder.append(session)
            async with session:
                listener.on_route(list(session.route))
                yield session
        except NoRouteError as exc:
            raise ChatBackendError(str(exc)) from None

    async def aclose(self) -> None:
        await self.connection.aclose()
