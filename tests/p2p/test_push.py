"""Server-to-server push with real libp2p hosts on 127.0.0.1 in one process: the pushed route gives
the local chain's outputs, a dead hop falls back to client-mediated replay, a server that cannot be
pushed to is carried by the client, and hostile pushes are refused while the session keeps going."""

from __future__ import annotations

import torch
import trio

from corolla.p2p.client import open_client_peer, open_stream
from corolla.p2p.records import PUSH_PROTOCOL
from corolla.p2p.session import FailoverEvent, InferenceSession
from corolla.p2p.wire import StreamGone, encode, read_message, write_message
from tests.p2p.test_swarm_inprocess import HOST, inputs_for, reference, run_with_swarm

TOL = {"rtol": 1e-4, "atol": 1e-4}


async def three_hops(swarm) -> list:
    return [await swarm.add(name, a, b) for name, a, b in (("a", 0, 2), ("b", 2, 4), ("c", 4, 6))]


def test_a_pushed_route_gives_the_local_outputs(tiny_model):
    xs = inputs_for(5)

    async def body(swarm):
        nodes = await three_hops(swarm)
        runs = {}
        for push in (True, False):
            async with swarm.client() as client, InferenceSession(client, 64, push=push) as session:
                before = [n.steps.pushed_in for n in nodes]
                runs[push] = ([await session.forward(x) for x in xs], [(h.start, h.end) for h in session.route],
                              [n.steps.pushed_in - b for n, b in zip(nodes, before, strict=True)])
        return runs

    runs = run_with_swarm(tiny_model, body)
    want = reference(tiny_model, xs)
    for push, (outs, route, pushed_in) in runs.items():
        assert route == [(0, 2), (2, 4), (4, 6)]
        for got, ref in zip(outs, want, strict=True):
            torch.testing.assert_close(got, ref, **TOL)
        # every step (the prompt included) reached b and c from the server before them, or never
        assert pushed_in == ([0, len(xs), len(xs)] if push else [0, 0, 0]), push


def test_a_dead_hop_mid_push_is_replayed_and_the_rest_goes_client_mediated(tiny_model):
    xs = inputs_for(6)
    events: list = []

    async def body(swarm):
        nodes = await three_hops(swarm)
        async with swarm.client() as client, InferenceSession(client, 64, on_event=events.append) as session:
            outs = [await session.forward(x) for x in xs[:4]]
            spare = await swarm.add("spare", 2, 4)
            swarm.kill("b")
            await trio.sleep(0.2)
            outs += [await session.forward(x) for x in xs[4:]]
            return outs, session.push, nodes[2].steps.pushed_in, spare.steps.pushed_in, nodes[1].peer_id

    outs, push_after, pushed_to_c, pushed_to_spare, dead = run_with_swarm(tiny_model, body)
    for got, ref in zip(outs, reference(tiny_model, xs), strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3)  # replay is one prefill: rounding
    (event,) = [e for e in events if isinstance(e, FailoverEvent)]
    assert (event.start, event.end, event.from_peer) == (2, 4, dead)
    assert push_after is False and pushed_to_spare == 0 and pushed_to_c == 4


def test_a_server_that_cannot_be_pushed_to_is_carried_by_the_client(tiny_model):
    xs = inputs_for(3)

    async def body(swarm):
        nodes = await three_hops(swarm)
        swarm.peers["b"].host.remove_stream_handler(PUSH_PROTOCOL)  # as a server without push would be
        async with swarm.client() as client, InferenceSession(client, 64) as session:
            outs = [await session.forward(x) for x in xs]
            return outs, [n.steps.pushed_in for n in nodes], session.push

    outs, pushed_in, push_after = run_with_swarm(tiny_model, body)
    for got, ref in zip(outs, reference(tiny_model, xs), strict=True):
        torch.testing.assert_close(got, ref, **TOL)
    # a stays pushing as far as it can (it cannot reach b); b still pushes on to c
    assert pushed_in == [0, 0, len(xs)] and push_after is True


async def push_once(peer, server_id: str, frame: bytes, protocol: str = PUSH_PROTOCOL) -> dict:
    """Send one frame on a fresh stream of `protocol`; the answer ({'type': 'ended'} if none)."""
    stream = await open_stream(peer, server_id, protocol, 5)
    try:
        await write_message(stream, frame, timeout=5)
        header, _ = await read_message(stream, idle_timeout=5, body_timeout=5)
        return header
    except StreamGone:
        return {"type": "ended"}
    finally:
        with trio.move_on_after(1):
            await stream.close()


def test_hostile_pushes_are_refused_and_the_session_goes_on(tiny_model):
    xs = inputs_for(4)

    async def body(swarm):
        nodes = await three_hops(swarm)
        async with swarm.client() as client, InferenceSession(client, 64) as session, \
                open_client_peer([swarm.bootstrap], host=HOST) as rogue:
            outs = [await session.forward(x) for x in xs[:2]]
            hop = session.hops[1]
            me, x = client.peer.peer_id, torch.randn(1, 1, 64)
            good = {"type": "push", "session": hop.session_id, "key": hop.push_key, "client": me, "seq": 999}
            replies = {}
            for name, header in {
                "unknown session": {**good, "session": "0" * 32},
                "wrong key": {**good, "key": "f" * 32},
                "other client": {**good, "client": rogue.peer_id},
                "no seq": {k: v for k, v in good.items() if k != "seq"},
            }.items():
                replies[name] = await push_once(rogue, nodes[1].peer_id, encode(header, [x]))
            replies["garbage"] = await push_once(rogue, nodes[1].peer_id, b"\x00\x00\x00\x05\x00\x00\x00\x00hello")
            replies["huge"] = await push_once(rogue, nodes[1].peer_id, b"\xff\xff\xff\xff\x00\x00\x00\x00")
            outs += [await session.forward(x) for x in xs[2:]]
            return outs, replies, nodes[1].steps.pushed_in, session.push

    outs, replies, pushed_in, push_after = run_with_swarm(tiny_model, body)
    assert {k: (r["type"], r.get("code")) for k, r in replies.items()} == {
        "unknown session": ("error", "UnknownSessionError"),
        "wrong key": ("error", "PushRefusedError"),
        "other client": ("error", "PushRefusedError"),
        "no seq": ("error", "ProtocolError"),
        "garbage": ("error", "ProtocolError"),
        "huge": ("error", "MessageTooLargeError"),
    }
    for got, ref in zip(outs, reference(tiny_model, xs), strict=True):
        torch.testing.assert_close(got, ref, **TOL)
    assert pushed_in == len(xs) and push_after is True  # none of the rogue's pushes ran
