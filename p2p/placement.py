"""Where a new server should sit: the span that most strengthens the weakest-covered blocks."""

from __future__ import annotations

from corolla.p2p.records import ONLINE, BlockRange, ServerInfo


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


def coverage_score(servers: list[ServerInfo], num_blocks: int) -> tuple[int, float]:
    """(blocks nobody serves, the throughput of the weakest block): fewer gaps first, then more."""
    per_block = block_throughput(servers, num_blocks)
    return sum(1 for t in per_block if t == 0.0), min(per_block, default=0.0)


def better_span(servers: list[ServerInfo], me: ServerInfo, num_blocks: int,
                min_gain: float = 2.0) -> BlockRange | None:
    """Where `me` should move, or None: only when that closes a gap the swarm has, or multiplies the
    weakest block's throughput by `min_gain` (moving costs a drain and a reload, so small gains wait)."""
    others = [s for s in servers if s.peer_id != me.peer_id]
    best = choose_span(others, num_blocks, me.end - me.start)
    if best == me.blocks:
        return None
    moved = ServerInfo(**{**me.to_wire(), "start": best.start, "end": best.end})
    gaps_now, weakest_now = coverage_score([*others, me], num_blocks)
    gaps_then, weakest_then = coverage_score([*others, moved], num_blocks)
    if gaps_then < gaps_now:
        return best
    if gaps_then == gaps_now == 0 and weakest_then >= min_gain * weakest_now:
        return best
    return None
