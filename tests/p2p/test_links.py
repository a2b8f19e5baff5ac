"""Routing knows the links between servers: what servers advertise about their round trips to the
next servers is checked at the border, bounded by what the client measured itself, and chooses the
chain with the lowest latency when servers push hidden states to each other."""

from __future__ import annotations

import math

import msgpack
import pytest

from corolla.p2p.errors import ProtocolError
from corolla.p2p.records import MAX_LINKS, ServerInfo
from corolla.p2p.routing import link_rtt_ms, plan_route


def server(name: str, start: int, end: int, *, rtt: float = 20.0, links: dict[str, float] | None = None
           ) -> ServerInfo:
    s = ServerInfo(peer_id=name, model_name="m", model_hash="h", start=start, end=end, block_ms=1.0,
                   free_cache_tokens=1000, max_sessions=16, next_rtt_ms=links or {})
    s.rtt_ms = rtt
    return s


def hops(route) -> list[str]:
    return [h.peer_id for h in route]


def over_the_wire(info: ServerInfo) -> ServerInfo:
    return ServerInfo.from_wire(msgpack.unpackb(msgpack.packb(info.to_wire()), strict_map_key=False))


def test_links_reachability_and_relays_cross_the_wire():
    info = server("a", 0, 10, links={"b": 4.5, "c": 80})
    info.reachability, info.relays = "private", ["/ip4/198.51.100.10/tcp/4000/p2p/R/p2p-circuit/p2p/a"]
    back = over_the_wire(info)
    assert (back.next_rtt_ms, back.reachability, back.relays) == (
        {"b": 4.5, "c": 80.0}, "private", info.relays)
    assert back.rtt_ms == 0.0  # the client's own measurement is never taken from the server


@pytest.mark.parametrize("links", [
    {"b": math.nan}, {"b": math.inf}, {"b": -1.0}, {"b": 1e9}, {"b": True}, {"b": "5"}, {5: 1.0}, ["b", 1.0],
    {f"p{i}": 1.0 for i in range(MAX_LINKS + 1)}, {"x" * 200: 1.0},
])
def test_a_lying_link_map_is_refused_by_name(links):
    wire = {**server("a", 0, 10).to_wire(), "next_rtt_ms": links}
    with pytest.raises(ProtocolError, match="next_rtt_ms"):
        ServerInfo.from_wire(wire)


@pytest.mark.parametrize("field,value", [("reachability", "everywhere"), ("reachability", 3),
                                         ("relays", "one"), ("relays", [1]), ("relays", ["r"] * 9)])
def test_bad_reachability_and_relays_are_refused(field, value):
    with pytest.raises(ProtocolError, match=field):
        ServerInfo.from_wire({**server("a", 0, 10).to_wire(), field: value})


def test_with_push_the_chain_with_the_fast_links_wins():
    # the client sees every server 20 ms away: only the links between servers tell the chains apart
    servers = [server("a", 0, 10, links={"near": 4.0, "far": 38.0}), server("far", 10, 20, links={"c": 4.0}),
               server("near", 10, 20, links={"c": 36.0}), server("c", 20, 30)]
    # a->near->c: 4 + 36 = 40 ms of links; a->far->c: 38 + 4 = 42 ms
    assert hops(plan_route(servers, 0, 30, cache_tokens=10, push=True)) == ["a", "near", "c"]
    servers[0].next_rtt_ms["far"] = 30.0
    assert hops(plan_route(servers, 0, 30, cache_tokens=10, push=True)) == ["a", "far", "c"]


def test_with_push_the_client_pays_only_the_first_and_last_hop():
    # two short hops far from the client but next to each other beat one hop that is a bit closer
    servers = [server("whole", 0, 20, rtt=60.0), server("x", 0, 10, rtt=50.0, links={"y": 2.0}),
               server("y", 10, 20, rtt=50.0)]
    assert hops(plan_route(servers, 0, 20, cache_tokens=10, push=True)) == ["x", "y"]
    assert hops(plan_route(servers, 0, 20, cache_tokens=10)) == ["whole"]  # the client carries each hop


def test_a_server_cannot_buy_routes_with_a_tiny_link_claim():
    # `liar` is 90 ms from the client, `c` 10 ms: their link is at least 80 ms whatever liar says
    liar, honest, c = (server("liar", 10, 20, rtt=90.0, links={"c": 0.0}),
                       server("honest", 10, 20, rtt=25.0, links={"c": 16.0}), server("c", 20, 30, rtt=10.0))
    a = server("a", 0, 10, rtt=20.0, links={"liar": 0.0, "honest": 9.0})
    assert link_rtt_ms(liar, c) == 80.0
    assert link_rtt_ms(a, liar) == 70.0
    assert hops(plan_route([a, liar, honest, c], 0, 30, cache_tokens=10, push=True)) == ["a", "honest", "c"]


def test_an_unknown_link_counts_as_going_through_the_client():
    a, b = server("a", 0, 10, rtt=12.0), server("b", 10, 20, rtt=30.0)
    assert link_rtt_ms(a, b) == 42.0
    assert link_rtt_ms(server("a", 0, 10, rtt=12.0, links={"b": 500.0}), b) == 42.0
