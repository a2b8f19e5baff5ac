"""A picture of the swarm at one moment: which servers hold which blocks, for the swarm view."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerRow:
    peer: str
    start: int
    end: int  # one past the last block
    state: str = "online"
    throughput: float | None = None  # tokens/s (or blocks·tokens/s, as the server reports)
    sessions: int | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class SwarmSnapshot:
    model: str
    num_blocks: int
    servers: list[ServerRow] = field(default_factory=list)
    error: str = ""

    def coverage(self) -> list[int]:
        """For each block, how many online servers hold it."""
        counts = [0] * self.num_blocks
        for s in self.servers:
            if s.state != "online":
                continue
            for b in range(max(0, s.start), min(self.num_blocks, s.end)):
                counts[b] += 1
        return counts

    def missing_blocks(self) -> list[int]:
        return [b for b, n in enumerate(self.coverage()) if n == 0]
