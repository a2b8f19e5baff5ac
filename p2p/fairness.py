"""Sharing one server between peers: per-peer quotas and compute turns given to the least served.

A server computes one thing at a time. With a plain lock, a peer that keeps long requests queued gets
most turns; here each waiting peer is ranked by the compute time it used recently (decaying), so a
peer decoding one token at a time always goes before one that just ran a 2048-token request.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from corolla.core.errors import CorollaError

USAGE_HALF_LIFE_S = 5.0  # s after which a peer's past compute counts half


class PeerLimitError(CorollaError):
    """One peer asked for more than its share of this server (sessions, cache or concurrent work)."""


class TooManySessionsError(CorollaError):
    """The server already serves as many sessions as it was told to."""


class SessionExpiredError(CorollaError):
    """A session went unused too long, or its cache was given to another peer while it sat idle."""


@dataclass
class SessionSlot:
    """One open session: who holds it, its cache reservation (tokens), and its idle read."""

    peer: str
    tokens: int
    runtime: Any  # the SpanRuntime holding its cache
    last_used: float
    waiting: trio.CancelScope | None = None  # set while the session waits for its next step
    evicted: str = ""


@dataclass(frozen=True)
class PeerQuota:
    """What one peer may hold on a server at once."""

    sessions: int
    cache_tokens: int
    forwards: int = 1  # stateless forward requests in flight

    @classmethod
    def share_of(cls, max_sessions: int, cache_tokens: int) -> PeerQuota:
        """A quarter of the sessions and half of the cache: any single peer leaves room for others."""
        return cls(sessions=max(1, max_sessions // 4), cache_tokens=max(1, cache_tokens // 2))


class FairCompute:
    """Compute turns: one at a time, the next going to the waiting peer that used the least lately."""

    def __init__(self, half_life_s: float = USAGE_HALF_LIFE_S) -> None:
        self.half_life_s = half_life_s
        self._busy = False
        self._waiting: dict[int, tuple[str, trio.Event]] = {}
        self._order = itertools.count()
        self._usage: dict[str, tuple[float, float]] = {}  # peer -> (seconds used, when measured)

    def usage(self, peer: str) -> float:
        """Compute seconds `peer` used, decayed by age."""
        used, at = self._usage.get(peer, (0.0, 0.0))
        return used * math.exp2(-(time.monotonic() - at) / self.half_life_s)

    @asynccontextmanager
    async def turn(self, peer: str) -> AsyncIterator[None]:
        """Hold the compute for `peer`; waits while another peer's turn runs. Always yields to the event
        loop first, so that back-to-back turns of one peer let the server answer others in between."""
        await trio.lowlevel.checkpoint()
        if self._busy or self._waiting:
            ticket = next(self._order)
            granted = trio.Event()
            self._waiting[ticket] = (peer, granted)
            try:
                await granted.wait()
            except BaseException:
                if self._waiting.pop(ticket, None) is None:  # granted while being cancelled: pass it on
                    self._release()
                raise
        else:
            self._busy = True
        t0 = time.monotonic()
        try:
            yield
        finally:
            self._usage[peer] = (self.usage(peer) + time.monotonic() - t0, time.monotonic())
            self._release()

    def _release(self) -> None:
        if not self._waiting:
            self._busy = False
            return
        ticket = min(self._waiting, key=lambda k: (self.usage(self._waiting[k][0]), k))
        _, granted = self._waiting.pop(ticket)
        granted.set()  # the turn passes directly: _busy stays True
        if len(self._usage) > 4096:  # forget peers long gone
            self._usage = {p: u for p, u in self._usage.items() if self.usage(p) > 1e-3}


def peer_of(stream: Any) -> str:
    """The remote peer's id (its key was proven by the secure channel; the one thing quotas can use)."""
    try:
        return str(stream.muxed_conn.peer_id)
    except AttributeError:
        return "?"


class InferenceTurns:
    """The batcher's compute lock: each batched pass of inference steps is one turn in the fair
    order, taken under one name, so long forward requests of any peer cannot starve decoding."""

    NAME = "inference steps"

    def __init__(self, compute: FairCompute) -> None:
        self.compute = compute
        self._turn: AbstractAsyncContextManager[None] | None = None

    async def __aenter__(self) -> None:
        turn = self.compute.turn(self.NAME)
        await turn.__aenter__()
        self._turn = turn  # one batch runs at a time (the batcher leads one round at a time)

    async def __aexit__(self, *exc_info: object) -> bool | None:
        turn, self._turn = self._turn, None
        return await turn.__aexit__(*exc_info) if turn is not None else None
