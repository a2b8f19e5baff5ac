"""Choosing servers: the route with the lowest expected latency per token over any span boundaries."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from corolla.p2p.errors import NoRouteError, ServersFullError
from corolla.p2p.names import blocks_text
from corolla.p2p.records import ONLINE, ServerInfo

HOP_MS = 0.5  # a fixed price per hop, so that among equal routes the one with fewer hops wins
BUSY_MS_PER_SESSION = 0.2  # servers with many open sessions are a little slower per step


@dataclass(frozen=True)
class RouteHop:
    """Blocks [start, end) run on `server` (a part or all of its span)."""

    server: ServerInfo
    start: int
    end: int

    @property
    def peer_id(self) -> str:
        return self.server.peer_id

    def __str__(self) -> str:
        return f"{blocks_text(self.start, self.end)} on {self.server.name}"


def hop_cost_ms(server: ServerInfo, num_blocks: int) -> float:
    """Expected ms per decoded token of running `num_blocks` blocks on `server`, network included."""
    return server.rtt_ms + HOP_MS + num_blocks * server.block_ms + BUSY_MS_PER_SESSION * server.active_sessions


def usable(server: ServerInfo, cache_tokens: int) -> bool:
    return server.state == ONLINE and server.free_cache_tokens >= cache_tokens and (
        server.max_sessions == 0 or server.active_sessions < server.max_sessions)


def uncovered(servers: list[ServerInfo], start: int, end: int) -> list[int]:
    """Blocks of [start, end) that no server in `servers` holds."""
    return [b for b in range(start, end) if not any(s.start <= b < s.end for s in servers)]


def plan_route(servers: list[ServerInfo], start: int, end: int, *, cache_tokens: int,
               model: str = "the model") -> list[RouteHop]:
    """Cheapest chain of hops covering blocks [start, end) exactly once, in order (Dijkstra over
    block boundaries; a hop may use any part of a server's span). Servers that are leaving, full or
    short of `cache_tokens` free cache are skipped; raise NoRouteError naming blocks nobody covers."""
    candidates = [s for s in servers if usable(s, cache_tokens)]
    best: dict[int, float] = {start: 0.0}
    back: dict[int, RouteHop] = {}
    queue = [(0.0, start)]
    while queue:
        cost, at = heapq.heappop(queue)
        if at == end:
            break
        if cost > best.get(at, float("inf")):
            continue
        for s in candidates:
            if not (s.start <= at < s.end):
                continue
            for to in range(at + 1, min(s.end, end) + 1):
                c = cost + hop_cost_ms(s, to - at)
                if c < best.get(to, float("inf")):
                    best[to] = c
                    back[to] = RouteHop(s, at, to)
                    heapq.heappush(queue, (c, to))
    if end not in back and start != end:
        missing = uncovered(candidates, start, end) or [b for b in range(start, end) if b >= _reach(back, start)]
        online = [s for s in servers if s.state == ONLINE]
        if not uncovered(online, start, end):  # live servers hold every block: they are full
            raise ServersFullError(missing, model)
        raise NoRouteError(missing, model)
    hops: list[RouteHop] = []
    at = end
    while at != start:
        hop = back[at]
        hops.append(hop)
        at = hop.start
    return hops[::-1]


def _reach(back: dict[int, RouteHop], start: int) -> int:
    return max(back, default=start)
