"""Where a new server should sit: the span that most strengthens the weakest-covered blocks."""

from __future__ import annotations

from p2p.records import ONLINE, BlockRange, ServerInfo


def block_throughput(servers: list[ServerInfo], num_blocks: int) -> list[float]:
    """Per block, the summed advertised throughput (tokens/s) of the online servers holding it."""
    total = [0.0] * num_blocks
    for s in servers:
        if s.state != ONLINE:
            continue
        for b in range(max(s.start, 0), min(s.end, num_blocks)):
            total[b] += max(s.throughput, 1e-3)
    return total


def choose_span(servers: list[ServerInfo], num_blocks: int, length: int) -> BlockRange:
    """Blocks [start, start+length): the most uncovered blocks first, then the least throughput,
    then the lowest start (so servers started together fill the model from the front)."""
    length = max(1, min(length, num_blocks))
    per_block = block_throughput(servers, num_blocks)

    def score(start: int) -> tuple[int, float, int]:
        window = per_block[start:start + length]
        return (-sum(1 for t in window if t == 0.0), sum(window), start)

    best = min(range(num_blocks - length + 1), key=score)
    return BlockRange(best, best + length)
