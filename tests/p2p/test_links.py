"""Routing knows the links between servers: what servers advertise about their round trips and
throughput to the next servers is checked at the border, round trips are bounded by what the client
measured itself, and routing chooses the chain with the lowest latency when servers push hidden
states to each other: by round trips for one token, by throughput for a long prompt or a replay."""

from __future__ import annotations

import hashlib
import math
import re

import msgpack
import pytest
import torch
import trio

from corolla.p2p.errors import ProtocolError
from corolla.p2p.links import throughput_mbps
from corolla.p2p.records import MAX_LINK_MBPS, MAX_LINKS, MIN_LINK_MBPS, ServerInfo
from corolla.p2p.routing import CLIENT_MBPS, link_mbps, link_rtt_ms, plan_route, token_bytes


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


# -- throughput: long prompts keep off slow links ---------------------------------------------------

def wide(name: str, start: int, end: int, *, rtt: float = 20.0, links: dict[str, float] | None = None,
         mbps: dict[str, float] | None = None, hidden: int = 4096) -> ServerInfo:
    s = server(name, start, end, rtt=rtt, links=links)
    s.hidden_size, s.dtype, s.next_mbps = hidden, "float16", mbps or {}
    return s


def test_throughput_crosses_the_wire():
    back = over_the_wire(wide("a", 0, 10, links={"b": 4.5}, mbps={"b": 93.5}))
    assert back.next_mbps == {"b": 93.5}


@pytest.mark.parametrize("mbps", [
    {"b": math.nan}, {"b": math.inf}, {"b": 0.0}, {"b": -5.0}, {"b": 1e12}, {"b": False}, {"b": "100"},
    {7: 10.0}, [10.0], {f"p{i}": 1.0 for i in range(MAX_LINKS + 1)}, {"x" * 200: 1.0},
])
def test_a_lying_throughput_map_is_refused_by_name(mbps):
    with pytest.raises(ProtocolError, match="next_mbps"):
        ServerInfo.from_wire({**server("a", 0, 10).to_wire(), "next_mbps": mbps})


def slow_and_fast_first_hops() -> list[ServerInfo]:
    # `slow` is the closer first hop (10 ms from the client against 60), but sends to `c` at 4 Mbit/s;
    # `fast` sends to `c` at 400 Mbit/s. Hidden size 4096 in float16: 8 KiB per token.
    return [wide("slow", 0, 10, rtt=10.0, links={"c": 12.0}, mbps={"c": 4.0}),
            wide("fast", 0, 10, rtt=60.0, links={"c": 12.0}, mbps={"c": 400.0}), wide("c", 10, 20)]


def test_one_token_steps_go_by_round_trips_and_long_prompts_by_throughput():
    servers = slow_and_fast_first_hops()
    route = lambda tokens: hops(plan_route(servers, 0, 20, cache_tokens=10, push=True, tokens=tokens))  # noqa: E731
    # one token: 8 KiB take 16 ms at 4 Mbit/s, less than what the nearer saves (half of 50 ms to it,
    # and `fast`'s link to `c` counts as 40 ms, the least its and c's round trips to the client allow)
    assert route(1) == ["slow", "c"]
    # 64 tokens: 512 KiB take 1 s at 4 Mbit/s, 10 ms at 400 Mbit/s
    assert route(64) == ["fast", "c"]


def test_a_long_prompt_before_a_long_decode_weighs_both():
    # the route serves the prompt and then every decoded token: 1000 tokens to decode at 39 ms more per
    # token through `fast` outweigh the 17 s `slow` loses moving them all at 4 Mbit/s
    servers = slow_and_fast_first_hops()
    assert hops(plan_route(servers, 0, 20, cache_tokens=10, push=True, tokens=64, steps=1000)) == ["slow", "c"]
    assert hops(plan_route(servers, 0, 20, cache_tokens=10, push=True, tokens=64, steps=10)) == ["fast", "c"]


def test_a_replay_too_is_routed_by_throughput():
    # client-mediated (a replay, or push off): each hop's hidden states cross the client's links twice,
    # so a long replay prefers one hop over two, though two are a little faster per token
    servers = [wide("whole", 0, 20, rtt=40.0), wide("x", 0, 10, rtt=20.0), wide("y", 10, 20, rtt=20.0)]
    servers[0].block_ms = 3.0
    assert hops(plan_route(servers, 0, 20, cache_tokens=10, tokens=1)) == ["x", "y"]
    assert hops(plan_route(servers, 0, 20, cache_tokens=10, tokens=300)) == ["whole"]


def test_an_unmeasured_link_counts_as_going_through_the_client_and_hidden_size_0_gains_nothing():
    a, b = wide("a", 0, 10), wide("b", 10, 20)
    assert link_mbps(a, b) == CLIENT_MBPS / 2
    # `quiet` measured nothing and says its hidden size is 0: its link is not free for that
    servers = [wide("quiet", 0, 10, hidden=0), wide("measured", 0, 10, mbps={"c": 100.0}), wide("c", 10, 20)]
    assert hops(plan_route(servers, 0, 20, cache_tokens=10, push=True, tokens=256)) == ["measured", "c"]
    # nor can one server make every token look huge, which would rule out routes by their links
    assert token_bytes([*servers, wide("huge", 0, 10, hidden=1 << 20)])["c"] == 4096 * 2


def test_throughput_from_a_timed_transfer():
    # 256 KiB answered after 40 ms on a 20 ms round trip: 20 ms of transfer, 104.9 Mbit/s
    assert throughput_mbps(256 * 1024, 0.040, 20.0) == pytest.approx(104.86, rel=1e-3)
    # an answer faster than the round trip measured before counts as 1 ms; never outside the records' range
    assert throughput_mbps(256 * 1024, 0.010, 20.0) == pytest.approx(2097.15, rel=1e-3)
    assert throughput_mbps(10**12, 1e-9, 0.0) == MAX_LINK_MBPS
    assert throughput_mbps(1, 1e6, 0.0) == MIN_LINK_MBPS


def test_a_server_probes_its_next_servers_and_hostile_probes_are_refused(tiny_model):
    from corolla.app.commands.swarm import swarm_report
    from corolla.p2p.client import open_client_peer, open_stream
    from corolla.p2p.links import PROBE_MAX_BYTES, LinkMeter
    from corolla.p2p.names import short_id
    from corolla.p2p.records import PROBE_PROTOCOL
    from corolla.p2p.wire import encode, write_message
    from tests.p2p.test_push import push_once
    from tests.p2p.test_swarm_inprocess import HOST, run_with_swarm

    async def body(swarm):
        a, b = await swarm.add("a", 0, 3), await swarm.add("b", 3, 6)
        meter = LinkMeter()
        await meter.look(swarm.peers["a"], a.model_name, a.model_hash, a.span.end, 6)
        a.next_rtt_ms, a.next_mbps = meter.rtt_ms, meter.mbps
        async with swarm.client() as client, open_client_peer([swarm.bootstrap], host=HOST) as rogue:
            seen = {s.peer_id: s for s in await client.servers(fresh=True)}
            replies = {name: await push_once(rogue, b.peer_id, frame, PROBE_PROTOCOL) for name, frame in {
                "other type": encode({"type": "push"}, [torch.zeros(8)]),
                "too big": encode({"type": "probe"}, [torch.zeros(PROBE_MAX_BYTES // 2 + 1, dtype=torch.float16)]),
                "two tensors": encode({"type": "probe"}, [torch.zeros(8), torch.zeros(8)]),
                "fine": encode({"type": "probe"}, [torch.zeros(8, dtype=torch.float16)]),
            }.items()}
            # a probe left half sent holds the rogue's one slot: its next probe is refused meanwhile
            half = await open_stream(rogue, b.peer_id, PROBE_PROTOCOL, 5)
            frame = encode({"type": "probe"}, [torch.zeros(4096, dtype=torch.float16)])
            await write_message(half, frame[:100], timeout=5)
            await trio.sleep(0.2)
            replies["second at once"] = await push_once(rogue, b.peer_id, frame, PROBE_PROTOCOL)
            await half.reset()
        report = await swarm_report(a.model_name, a.model_hash, 6, [swarm.bootstrap])
        return meter, seen[a.peer_id], b.peer_id, replies, report

    meter, a_info, b_id, replies, report = run_with_swarm(tiny_model, body)
    # `corolla swarm` shows the link with both numbers
    rtt, mbps = meter.rtt_ms[b_id], meter.mbps[b_id]
    assert re.search(rf"^{re.escape(a_info.name)} -> {re.escape(short_id(b_id))} +{rtt:.1f} +{mbps:.1f}$",
                     report, re.M), report
    assert set(meter.rtt_ms) == set(meter.mbps) == {b_id}
    assert a_info.next_mbps == meter.mbps and a_info.next_rtt_ms == meter.rtt_ms  # advertised as measured
    print("a -> b on 127.0.0.1:", meter.rtt_ms[b_id], "ms,", meter.mbps[b_id], "Mbit/s")
    assert meter.mbps[b_id] > 5.0  # 256 KiB over loopback: far above any home link
    assert {k: (r["type"], r.get("code"), r.get("sha256")) for k, r in replies.items()} == {
        "other type": ("error", "ProtocolError", None), "too big": ("error", "MessageTooLargeError", None),
        "two tensors": ("error", "ProtocolError", None), "fine": ("probed", None, hashlib.sha256(bytes(16)).hexdigest()),
        "second at once": ("error", "PeerLimitError", None)}
