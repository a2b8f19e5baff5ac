"""A picture of the swarm at one moment: which servers hold which blocks, for the swarm view; and the
memory that keeps a server that left on screen for a short grace period, then drops it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from corolla.p2p.host import Peer
from corolla.p2p.nat import describe_path
from corolla.p2p.records import ONLINE, ServerInfo

LEFT_GRACE_S = 20.0  # s a server that stopped answering stays listed (as "left") before it disappears


@dataclass(frozen=True)
class SwarmSnapshot:
    model: str
    num_blocks: int
    servers: list[ServerInfo] = field(default_factory=list)  # those that answered
    left: list[ServerInfo] = field(default_factory=list)  # answered before, not now: last known info
    error: str = ""
    paths: dict[str, str] = field(default_factory=dict)  # how each server is reached (reached_by)

    def coverage(self) -> list[int]:
        """For each block, how many online servers hold it."""
        counts = [0] * self.num_blocks
        for s in self.servers:
            if s.state != ONLINE:
                continue
            for b in range(max(0, s.start), min(self.num_blocks, s.end)):
                counts[b] += 1
        return counts

    def missing_blocks(self) -> list[int]:
        return [b for b, n in enumerate(self.coverage()) if n == 0]


class ServerMemory:
    """The servers seen answering, and when. The DHT keeps a server's announcements for a day or two
    after it left, so only what answered recently is worth showing."""

    def __init__(self, grace_s: float = LEFT_GRACE_S) -> None:
        self.grace_s = grace_s
        self._seen: dict[str, tuple[ServerInfo, float]] = {}

    def left(self, live: list[ServerInfo], now: float | None = None) -> list[ServerInfo]:
        """Record `live` (answered now); return the servers that answered within the last `grace_s`
        seconds but not now, as they last described themselves. Older ones are forgotten."""
        now = time.monotonic() if now is None else now
        for s in live:
            self._seen[s.peer_id] = (s, now)
        gone: list[ServerInfo] = []
        for peer, (info, seen) in list(self._seen.items()):
            if seen == now:
                continue
            if now - seen > self.grace_s:
                del self._seen[peer]
            else:
                gone.append(info)
        return sorted(gone, key=lambda s: (s.start, s.end, s.peer_id))

    def seen_ago(self, peer_id: str, now: float | None = None) -> float | None:
        """Seconds since `peer_id` last answered, or None when it is not remembered."""
        entry = self._seen.get(peer_id)
        return None if entry is None else (time.monotonic() if now is None else now) - entry[1]


def reached_by(peer: Peer, servers: list[ServerInfo]) -> dict[str, str]:
    """How `peer` reaches each server now, by peer id: 'direct', 'hole-punched', 'relayed via <relay>'
    or 'not connected' (the words of `corolla swarm`)."""
    return {s.peer_id: describe_path(peer.host, s.peer_id, s.reachability) for s in servers}
