"""Choosing servers: the route with the lowest expected latency for a step over any span boundaries.

A step of `tokens` tokens pays, on each link it crosses, half the link's round trip plus the time to
move tokens x hidden size x bytes per element at the link's throughput: a one-token step is ruled by
round trips, a long prompt (or a replay) by throughput, so it keeps off a slow link."""

from __future__ import annotations

import heapq
import statistics
from dataclasses import dataclass

from corolla.core.dtypes import ELEMENT_BYTES
from corolla.p2p.errors import NoRouteError, ServersFullError
from corolla.p2p.names import blocks_text
from corolla.p2p.records import ONLINE, ServerInfo

HOP_MS = 0.5  # a fixed price per hop, so that among equal routes the one with fewer hops wins
BUSY_MS_PER_SESSION = 0.2  # servers with many open sessions are a little slower per step
# What a link the client is on is taken to carry (Mbit/s): the client measures none of its own, and a
# link between servers that no one measured counts as going through the client (twice this).
CLIENT_MBPS = 50.0


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
    """Expected ms per decoded token of running `num_blocks` blocks on `server`, network included
    (the client sends each hop its input and reads its output: one client round trip per hop)."""
    return server.rtt_ms + compute_ms(server, num_blocks)


def compute_ms(server: ServerInfo, num_blocks: int) -> float:
    """Expected ms per decoded token on `server` itself, without the network."""
    return HOP_MS + num_blocks * server.block_ms + BUSY_MS_PER_SESSION * server.active_sessions


def link_rtt_ms(a: ServerInfo, b: ServerInfo) -> float:
    """Round trip (ms) from server `a` to server `b` as routing believes it: what `a` measured and
    advertised, kept within what the triangle inequality allows given the client's own round trips
    to both (|ca - cb| <= ab <= ca + cb), so that a server lying about its links can neither
    draw routes with a tiny claim nor make a route look worse than going through the client;
    unknown links count as that upper bound (the client could relay between them)."""
    low, high = abs(a.rtt_ms - b.rtt_ms), a.rtt_ms + b.rtt_ms
    claimed = a.next_rtt_ms.get(b.peer_id)
    return high if claimed is None else min(max(claimed, low), high)


def link_mbps(a: ServerInfo, b: ServerInfo) -> float:
    """Throughput (Mbit/s) from server `a` straight to server `b`: what `a` measured and advertised
    (records.py keeps it within MIN_LINK_MBPS..MAX_LINK_MBPS), else as if through the client. A claim
    cannot be checked the way a round trip can: a server that overstates it draws long prompts that
    then take longer, as one that understates its compute would draw decoding steps."""
    return a.next_mbps.get(b.peer_id, CLIENT_MBPS / 2)


def transfer_ms(nbytes: float, mbps: float) -> float:
    """ms to move `nbytes` at `mbps` Mbit/s."""
    return 8 * nbytes / (1000 * mbps)


def token_bytes(servers: list[ServerInfo]) -> dict[str, int]:
    """Bytes of one token's hidden state as each server sends it: its dtype's, times the model's
    hidden size as most servers state it (the median: a few saying 0 or a huge size change nothing)."""
    hidden = statistics.median_low([s.hidden_size for s in servers]) if servers else 0
    return {s.peer_id: hidden * ELEMENT_BYTES.get(s.dtype, 4) for s in servers}


def usable(server: ServerInfo, cache_tokens: int) -> bool:
    return server.state == ONLINE and server.free_cache_tokens >= cache_tokens and (
        server.max_sessions == 0 or server.active_sessions < server.max_sessions)


def uncovered(servers: list[ServerInfo], start: int, end: int) -> list[int]:
    """Blocks of [start, end) that no server in `servers` holds."""
    return [b for b in range(start, end) if not any(s.start <= b < s.end for s in servers)]


def plan_route(servers: list[ServerInfo], start: int, end: int, *, cache_tokens: int,
               model: str = "the model", push: bool = False, tokens: int = 1, steps: int = 0) -> list[RouteHop]:
    """Cheapest chain of hops covering blocks [start, end) exactly once, in order (Dijkstra over
    block boundaries; a hop may use any part of a server's span). Servers that are leaving, full or
    short of `cache_tokens` free cache are skipped; raise NoRouteError naming blocks nobody covers.

    The cost is that of a step of `tokens` tokens (a prompt, a replay) followed by `steps` one-token
    steps (the decoding it is expected to lead to), each paying the network and compute. A step's
    network: with `push` (each server sends its output straight to the next) half the client's round
    trip to the first hop, half of each link's round trip between hops (link_rtt_ms) and half the
    last hop's round trip back; else the client's round trip to each hop. On top, every token moved
    pays its hidden state's bytes over each of those links (in and out of each hop without push): at
    the link's throughput between servers (link_mbps), at CLIENT_MBPS to and from the client.
    Compute is counted as for one token per step."""
    candidates = [s for s in servers if usable(s, cache_tokens)]
    runs, moved = 1 + steps, tokens + steps  # steps taken, tokens carried
    size = {pid: moved * n for pid, n in token_bytes(candidates).items()}
    client_ms = transfer_ms(max(size.values(), default=0), CLIENT_MBPS)  # either way, the same bytes
    # a state is (block boundary reached, index of the server of the hop that reached it; -1: none yet)
    best: dict[tuple[int, int], float] = {(start, -1): 0.0}
    back: dict[tuple[int, int], tuple[tuple[int, int], RouteHop]] = {}
    queue = [(0.0, start, -1)]
    done: tuple[int, int] | None = None
    while queue:
        cost, at, prev = heapq.heappop(queue)
        if cost > best.get((at, prev), float("inf")):
            continue
        if at == end:
            done = (at, prev)
            break
        for i, s in enumerate(candidates):
            if not (s.start <= at < s.end):
                continue
            if not push:
                network = runs * s.rtt_ms + 2 * client_ms
            elif prev < 0:
                network = runs * s.rtt_ms / 2 + client_ms
            else:
                a = candidates[prev]
                network = runs * link_rtt_ms(a, s) / 2 + transfer_ms(size[a.peer_id], link_mbps(a, s))
            back_ms = runs * s.rtt_ms / 2 + client_ms
            for to in range(at + 1, min(s.end, end) + 1):
                c = cost + network + runs * compute_ms(s, to - at) + (back_ms if push and to == end else 0.0)
                key = (to, i if push else -1)  # without push the cost does not depend on who came before
                if c < best.get(key, float("inf")):
                    best[key] = c
                    back[key] = ((at, prev), RouteHop(s, at, to))
                    heapq.heappush(queue, (c, *key))
    if done is None and start != end:
        reached = max((at for at, _ in best), default=start)
        missing = uncovered(candidates, start, end) or [b for b in range(start, end) if b >= reached]
        online = [s for s in servers if s.state == ONLINE]
        if not uncovered(online, start, end):  # live servers hold every block: they are full
            raise ServersFullError(missing, model)
        raise NoRouteError(missing, model)
    hops: list[RouteHop] = []
    state = done
    while state is not None and state in back:
        state, hop = back[state]
        hops.append(hop)
    return hops[::-1]
