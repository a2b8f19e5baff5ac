"""Routing and placement: cheapest chains over any span boundaries, and where a new server goes."""

from __future__ import annotations

import pytest

from corolla.core.span import Span
from corolla.p2p.errors import NoRouteError
from corolla.p2p.placement import better_span, choose_span
from corolla.p2p.records import LEAVING, BlockRange, ServerInfo, format_blocks
from corolla.p2p.routing import plan_route
from corolla.p2p.server import ServerNode


def server(name: str, start: int, end: int, *, rtt: float = 2.0, block_ms: float = 1.0,
           free: int = 1000, state: str = "online", sessions: int = 0) -> ServerInfo:
    s = ServerInfo(peer_id=name, model_name="m", model_hash="h", start=start, end=end, state=state,
                   block_ms=block_ms, throughput=1000 / (block_ms * (end - start)), free_cache_tokens=free,
                   active_sessions=sessions, max_sessions=16)
    s.rtt_ms = rtt
    return s


def hops(route) -> list[tuple[str, int, int]]:
    return [(h.peer_id, h.start, h.end) for h in route]


def test_three_spans_in_a_row():
    servers = [server("c", 20, 30), server("a", 0, 10), server("b", 10, 20)]
    assert hops(plan_route(servers, 0, 30, cache_tokens=10)) == [("a", 0, 10), ("b", 10, 20), ("c", 20, 30)]


def test_overlapping_spans_are_cut_where_they_meet():
    servers = [server("a", 0, 12), server("b", 10, 20)]
    route = plan_route(servers, 0, 20, cache_tokens=10)
    assert [h.peer_id for h in route] == ["a", "b"]
    assert route[0].start == 0 and route[-1].end == 20 and route[0].end == route[1].start


def test_fewer_hops_win_when_the_network_is_slow():
    servers = [server("a", 0, 10, rtt=50), server("b", 10, 20, rtt=50), server("whole", 0, 20, rtt=50)]
    assert hops(plan_route(servers, 0, 20, cache_tokens=10)) == [("whole", 0, 20)]


def test_a_fast_server_wins_over_a_slow_one():
    servers = [server("slow", 0, 10, block_ms=20), server("fast", 0, 10, block_ms=1)]
    assert hops(plan_route(servers, 0, 10, cache_tokens=10)) == [("fast", 0, 10)]


def test_full_and_leaving_servers_are_skipped():
    servers = [server("full", 0, 10, free=5), server("leaving", 0, 10, state=LEAVING), server("ok", 0, 10, rtt=90)]
    assert hops(plan_route(servers, 0, 10, cache_tokens=10)) == [("ok", 0, 10)]


def test_a_part_of_the_model_can_be_routed_alone():
    servers = [server("a", 0, 30)]
    assert hops(plan_route(servers, 12, 19, cache_tokens=10)) == [("a", 12, 19)]


def test_missing_blocks_are_named():
    servers = [server("a", 0, 12), server("b", 20, 30)]
    with pytest.raises(NoRouteError, match="12–19") as info:
        plan_route(servers, 0, 30, cache_tokens=10)
    assert info.value.missing == list(range(12, 20))


def test_format_blocks():
    assert format_blocks([0, 1, 2, 5, 7, 8]) == "0–2, 5, 7–8"
    assert format_blocks([]) == ""


def test_block_range_parse():
    assert BlockRange.parse("3:9") == BlockRange(3, 9) and len(BlockRange(3, 9)) == 6
    for bad in ("9:3", "a:b", "3", "-1:2"):
        with pytest.raises(ValueError, match="bad block range"):
            BlockRange.parse(bad)


def test_placement_fills_uncovered_blocks_first():
    assert choose_span([], 30, 10) == BlockRange(0, 10)
    assert choose_span([server("a", 0, 10)], 30, 10) == BlockRange(10, 20)
    assert choose_span([server("a", 0, 10), server("b", 10, 20)], 30, 10) == BlockRange(20, 30)
    # everything covered once: strengthen the weakest (slowest) part
    covered = [server("a", 0, 10, block_ms=1), server("b", 10, 20, block_ms=10), server("c", 20, 30, block_ms=1)]
    assert choose_span(covered, 30, 10) == BlockRange(10, 20)


def test_placement_ignores_leaving_servers():
    assert choose_span([server("a", 0, 10, state=LEAVING)], 30, 10) == BlockRange(0, 10)


def test_a_server_moves_only_to_close_a_gap_or_for_a_large_gain():
    me = server("me", 0, 10)
    # blocks 10:20 lost their server: move there
    assert better_span([me, server("a", 0, 10), server("c", 20, 30)], me, 30) == BlockRange(10, 20)
    # moving would open a gap where I am: stay
    assert better_span([me, server("b", 10, 20), server("c", 20, 30)], me, 30) is None
    # no gap anywhere, a small gain: stay
    even = [me, server("a", 0, 10), server("b", 10, 20, block_ms=1.2), server("c", 20, 30)]
    assert better_span(even, me, 30) is None
    # no gap, but blocks 10:20 are ten times weaker than the rest: worth a move
    weak = [me, server("a", 0, 10), server("b", 10, 20, block_ms=10), server("c", 20, 30)]
    assert better_span(weak, me, 30) == BlockRange(10, 20)


def test_a_declared_block_time_is_announced_and_never_measured_over(tiny_model):
    """`corolla serve --block-ms`: the owner's figure is what the node announces, and neither the
    start-up measurement nor real steps replace it; without one, both do."""
    declared = ServerNode(Span.load(tiny_model, 0, 2), "tiny", "hash")
    declared.declared_block_ms = 50.0
    assert declared.measure_throughput() == 50.0
    declared.observe(1, 0.001, 2)
    assert declared.info().block_ms == 50.0

    measured = ServerNode(Span.load(tiny_model, 0, 2), "tiny", "hash")
    first = measured.measure_throughput()
    assert 0 < first < 50.0
    measured.observe(1, 1.0, 2)  # a slow real step: 500 ms per block
    assert measured.info().block_ms == pytest.approx(0.9 * first + 50.0)
