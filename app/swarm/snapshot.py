"""A picture of the swarm at one moment: which servers hold which blocks, for the swarm view."""

from __future__ import annotations

from dataclasses import dataclass, field

from corolla.p2p.host import Peer
from corolla.p2p.nat import describe_path
from corolla.p2p.records import ONLINE, ServerInfo


@dataclass(frozen=True)
class SwarmSnapshot:
    model: str
    num_blocks: int
    servers: list[ServerInfo] = field(default_factory=list)  # those that answered
    silent: list[str] = field(default_factory=list)  # peer ids announced in the DHT that did not answer
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


def reached_by(peer: Peer, servers: list[ServerInfo]) -> dict[str, str]:
    """How `peer` reaches each server now, by peer id: 'direct', 'hole-punched', 'relayed via <relay>'
    or 'not connected' (the words of `corolla swarm`)."""
    return {s.peer_id: describe_path(peer.host, s.peer_id, s.reachability) for s in servers}
