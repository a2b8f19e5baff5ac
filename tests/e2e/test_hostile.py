"""Hostile peers against real processes on 127.0.0.1: every malformed frame on every protocol gets an
error reply while the server keeps serving, and peers whose info replies lie are skipped by a real
`corolla generate`, whose greedy text stays that of a local run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from corolla.app.demo.processes import LocalSwarm
from corolla.core.model import ModelInfo
from corolla.p2p.client import SwarmClient, open_client_peer, open_stream, request_info
from corolla.p2p.discovery import announce
from corolla.p2p.host import open_peer
from corolla.p2p.records import FORWARD_PROTOCOL, INFERENCE_PROTOCOL, INFO_PROTOCOL, BlockRange
from corolla.p2p.wire import StreamGone, encode, read_message, write_message
from tests.e2e.test_swarm import local_text
from tests.hostile import bad_frames, frame, lying_infos, odd_requests

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
TOKENS = 8
PROTOCOLS = {INFO_PROTOCOL: "info", FORWARD_PROTOCOL: "forward", INFERENCE_PROTOCOL: "open"}


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, default_model_path):
    with LocalSwarm(tmp_path_factory.mktemp("hostile"), announce_period=3.0) as s:
        s.add_server("--blocks", "0:30", name="honest")
        s.servers[0].peer_id = s.servers[0].wait_for(r"serving blocks? .* as (\S+);").group(1)
        yield s


async def exchange(peer, peer_id: str, protocol: str, frames: list[bytes]) -> list[dict]:
    """Send `frames` on one new stream, reading a reply after each; the replies' headers."""
    stream = await open_stream(peer, peer_id, protocol, 10)
    replies = []
    try:
        for data in frames:
            await write_message(stream, data, timeout=10)
            replies.append((await read_message(stream, idle_timeout=15, body_timeout=15))[0])
    except StreamGone:
        replies.append({"type": "<stream ended>"})
    finally:
        await stream.close()
    return replies


def test_every_bad_frame_on_every_protocol_gets_an_error_and_the_server_keeps_serving(swarm, default_model_path):
    model = ModelInfo.load(default_model_path)
    server = swarm.servers[0]
    open_frame = encode({"type": "open", "max_length": 16})

    async def main():
        got: dict[tuple[str, str, str], str] = {}
        async with open_client_peer([swarm.bootstrap_addr], host="127.0.0.1") as peer:
            await SwarmClient(peer, model.name, model.hash, model.num_blocks).servers()  # learns its address
            for protocol, kind in PROTOCOLS.items():
                for name, data in bad_frames(kind, model.hidden_size).items():
                    (reply,) = await exchange(peer, server.peer_id, protocol, [data])
                    got[(protocol, "bad", name)] = f"{reply['type']}:{reply.get('code')}"
                for name, data in odd_requests(kind, model.hidden_size).items():
                    (reply,) = await exchange(peer, server.peer_id, protocol, [data])
                    got[(protocol, "odd", name)] = f"{reply['type']}:{reply.get('code')}"
            # inside an open session: steps carrying each frame, each followed by a good step
            for name, data in {**bad_frames("step", model.hidden_size),
                               **odd_requests("step", model.hidden_size)}.items():
                replies = await exchange(peer, server.peer_id, INFERENCE_PROTOCOL, [open_frame, data])
                got[("session", "step", name)] = f"{replies[-1]['type']}:{replies[-1].get('code')}"
            info = await request_info(peer, server.peer_id)
        return got, info

    got, info = trio.run(main)
    assert server.proc.poll() is None, server.output()[-3000:]
    assert info.end == 30 and info.active_sessions == 0
    for (protocol, group, name), reply in got.items():
        if group == "bad":
            assert reply.startswith("error:") and "InternalError" not in reply, (protocol, name, reply)
        else:  # every frame got an answer; none was a crash
            assert reply.split(":")[0] in ("error", "info", "result", "opened"), (protocol, name, reply)
            assert "InternalError" not in reply, (protocol, name, reply)
    assert got[(FORWARD_PROTOCOL, "odd", "0-element bfloat16")] == "error:ShapeError"
    assert got[(FORWARD_PROTOCOL, "bad", "payload says 2^29 bytes")] == "error:MessageTooLargeError"
    assert got[(INFO_PROTOCOL, "bad", "dtype is a list")] == "error:ProtocolError"
    assert got[(INFERENCE_PROTOCOL, "odd", "end is a float")] == "error:ProtocolError"
    assert "Traceback" not in server.output()
    # and it still serves a whole generation
    expected = local_text(default_model_path, PROMPT, TOKENS) + "\n"
    assert generate(swarm).stdout == expected


def generate(swarm, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "corolla.app", "generate", "--model", "default", "--prompt", PROMPT, "--greedy",
         "--max-new-tokens", str(TOKENS), "--initial-peers", swarm.bootstrap_addr, "--no-stream", *extra],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


async def run_liar(swarm, model: ModelInfo, lie: dict | None, raw: bytes | None,
                   task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A peer that announces itself as a server of the model and answers info with `lie` (its own peer
    id put in), or `raw`. It provides the model's record and block 0's only: a client finds servers
    by the model's record (blocks' records are looked up only for blocks no server found that way
    holds), and 32 records for each of 16 liars would take most of the test's time."""
    async with open_peer(create_new_key_pair(), host="127.0.0.1", initial_peers=[swarm.bootstrap_addr]) as peer:
        async def info(stream) -> None:
            try:
                await read_message(stream, idle_timeout=5, body_timeout=5)
                reply = raw if raw is not None else encode({"type": "info", "info": {
                    **lie, "peer_id": lie["peer_id"] or peer.peer_id}})
                await write_message(stream, reply, timeout=5)
            except Exception:  # noqa: BLE001 - a liar does not care
                pass
            finally:
                await stream.close()

        peer.host.set_stream_handler(INFO_PROTOCOL, info)
        await announce(peer, model.name, model.hash, BlockRange(0, 1))
        task_status.started(peer.peer_id)
        await trio.sleep_forever()


def test_peers_whose_info_lies_are_skipped_and_the_text_equals_local(swarm, default_model_path):
    model = ModelInfo.load(default_model_path)
    lies = lying_infos("", model.name, model.hash, model.num_blocks)
    for lie in lies.values():
        if lie["peer_id"] == "":
            lie["peer_id"] = None  # filled in with the liar's own id
    raws = {"tensor dtype is a list": frame({"type": "info", "info": {},
                                             "tensors": [{"dtype": ["float32"], "shape": [1]}]}, bytes(4)),
            "reply not a map": frame([1, 2, 3])}

    async def main():
        async with trio.open_nursery() as nursery:
            liars = {}
            for name, lie in lies.items():
                liars[name] = await nursery.start(run_liar, swarm, model, lie, None)
            for name, raw in raws.items():
                liars[name] = await nursery.start(run_liar, swarm, model, None, raw)
            async with open_client_peer([swarm.bootstrap_addr], host="127.0.0.1") as peer:
                client = SwarmClient(peer, model.name, model.hash, model.num_blocks)
                live = await client.servers(rediscover=True)
            result = await trio.to_thread.run_sync(generate, swarm, "--verbose")
            nursery.cancel_scope.cancel()
        return liars, live, result

    liars, live, result = trio.run(main)
    expected = local_text(default_model_path, PROMPT, TOKENS) + "\n"
    assert result.stdout == expected
    honest = swarm.servers[0].peer_id
    # the one plausible liar is believed by info and routed to first, then banned when it cannot serve
    assert {s.peer_id for s in live} <= {honest, liars["plausible but serves nothing"]}
    assert honest in {s.peer_id for s in live}
    assert f"final route: blocks 0–29 on …{honest[-8:]}" in result.stderr
    assert "Traceback" not in result.stderr
