"""Server-to-server push with real processes on 127.0.0.1: a three-server route pushes each step from
server to server and prints what a local run prints; a server killed mid-generation is replaced and
the text stays the same; hostile pushes get error replies and the server goes on serving."""

from __future__ import annotations

import re
import sys

import pytest
import torch
import trio

from corolla.app.demo.processes import LocalSwarm
from corolla.core.model import ModelInfo
from corolla.p2p.client import SwarmClient, open_client_peer, open_stream
from corolla.p2p.names import short_id
from corolla.p2p.records import PUSH_PROTOCOL
from corolla.p2p.wire import StreamGone, encode, read_message, write_message
from tests.e2e.test_failover import Generation, peer_ids
from tests.e2e.test_swarm import local_text

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals")]

TOKENS = 30
PROMPT = "Here is a short story about a robot who learns to paint:"
PUSHED = r"session (\w+): steps arrive pushed by"


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, default_model_path):
    with LocalSwarm(tmp_path_factory.mktemp("push"), announce_period=3.0) as s:
        for blocks, name in (("0:10", "front"), ("10:20", "middle"), ("20:30", "back"), ("10:20", "spare")):
            s.start_server("--blocks", blocks, name=name)
        for server in s.servers:
            server.wait_for("serving block")
        yield s


@pytest.fixture(scope="module")
def expected(default_model_path) -> str:
    return local_text(default_model_path, PROMPT, TOKENS) + "\n"


def pushed_sessions(swarm) -> dict[str, int]:
    """Per server name: sessions into which steps were pushed."""
    return {s.name: len(re.findall(PUSHED, s.output())) for s in swarm.servers}


def test_a_pushed_three_server_route_prints_the_local_text(swarm, expected):
    before = pushed_sessions(swarm)
    code, out, err = Generation(swarm).finish()
    assert code == 0, err
    assert out == expected
    route = re.search(r"route: (.*)", err).group(1)
    assert len(re.findall(r"blocks? \d+(?:–\d+)? on ", route)) == 3, route
    after = pushed_sessions(swarm)
    # the first server is sent to by the client; the second and third got their steps pushed
    assert after["front"] == before["front"]
    assert after["back"] == before["back"] + 1
    assert after["middle"] + after["spare"] == before["middle"] + before["spare"] + 1


def server_logs(swarm) -> str:
    return "\n".join(f"--- {s.name}\n" + "\n".join(s.output().splitlines()[-15:]) for s in swarm.servers)


def test_kill_9_of_a_pushed_to_server_gives_the_same_text(swarm, expected):
    gen = Generation(swarm)
    try:
        gen.wait_for_text(12, timeout=300)  # a loaded 2-core machine: the first tokens can be slow
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{server_logs(swarm)}") from None
    ids = peer_ids(swarm)
    victim = ids[gen.hop_holding(15)]
    victim.wait_for(PUSHED, timeout=60)  # it is being pushed to (checked steps go client-mediated)
    victim.proc.kill()  # SIGKILL: no goodbye
    code, out, err = gen.finish()
    assert code == 0, err
    assert out == expected
    assert re.search(r"moved from \S+ to ", err), err


async def hostile_pushes(bootstrap: str, path) -> tuple[str, dict[str, tuple[str, str | None]]]:
    """Bad pushes to the server of blocks 20:30, each on its own stream: its peer id and the replies."""
    model = ModelInfo.load(path)
    x = torch.randn(1, 1, model.hidden_size)
    frames = {
        "unknown session": encode({"type": "push", "session": "0" * 32, "key": "k" * 32, "client": "me",
                                   "seq": 1}, [x]),
        "not a push": encode({"type": "step", "session": "0" * 32}, [x]),
        "garbage": b"\x00\x00\x00\x05\x00\x00\x00\x00hello",
        "huge": b"\xff\xff\xff\xff\x00\x00\x00\x00",
    }
    replies = {}
    async with open_client_peer([bootstrap], host="127.0.0.1") as rogue:
        servers = await SwarmClient(rogue, model.name, model.hash, model.num_blocks).servers()  # addresses
        server_id = next(s.peer_id for s in servers if (s.start, s.end) == (20, 30))
        for name, frame in frames.items():
            stream = await open_stream(rogue, server_id, PUSH_PROTOCOL, 10)
            try:
                await write_message(stream, frame, timeout=10)
                header, _ = await read_message(stream, idle_timeout=10, body_timeout=10)
                replies[name] = (header["type"], header.get("code"))
            except StreamGone:
                replies[name] = ("ended", None)
            finally:
                with trio.move_on_after(1):
                    await stream.close()
    return server_id, replies


def test_hostile_pushes_are_refused_and_the_server_keeps_serving(swarm, expected, default_model_path):
    back = next(s for s in swarm.servers if s.name == "back")
    back_id, replies = trio.run(hostile_pushes, swarm.bootstrap_addr, default_model_path)
    assert peer_ids(swarm)[short_id(back_id)] is back
    assert replies == {"unknown session": ("error", "UnknownSessionError"),
                       "not a push": ("error", "ProtocolError"),
                       "garbage": ("error", "ProtocolError"),
                       "huge": ("error", "MessageTooLargeError")}
    assert back.proc.poll() is None
    before = pushed_sessions(swarm)["back"]
    code, out, err = Generation(swarm).finish()
    assert code == 0, err
    assert out == expected
    assert pushed_sessions(swarm)["back"] == before + 1
