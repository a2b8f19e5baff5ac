"""The swarm as users run it: a bootstrap peer and servers as real processes on 127.0.0.1, serving
the default model, and clients generating through them."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
import trio

from corolla.app.demo.processes import LocalSwarm

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
ARGS = ["--model", "default", "--max-new-tokens", "10", "--greedy"]


def corolla(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "corolla.app", *args], check=False, capture_output=True, text=True, timeout=timeout)


def popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "corolla.app", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, default_model_path):
    with LocalSwarm(tmp_path_factory.mktemp("swarm"), announce_period=3.0) as s:
        for blocks in ("0:10", "10:20", "20:30"):
            s.start_server("--blocks", blocks)
        for server in s.servers:
            server.wait_for("serving block")
        yield s


def local_output(prompt: str) -> str:
    result = corolla("generate", *ARGS, "--prompt", prompt, "--local")
    assert result.returncode == 0, result.stderr
    return result.stdout


def local_text(path, prompt: str, max_new_tokens: int = 10) -> str:
    """What `generate --local --greedy` prints, computed in this process (no interpreter start-up)."""
    from transformers import AutoTokenizer

    from corolla.core.chain import LocalChain
    from corolla.core.generation import Decoder, SamplingParams, decode_in_process
    from corolla.core.head import ClientHead

    # Busy-waiting OpenMP workers collapse when the cores are shared with idle servers: one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(path)
    decoder = Decoder(ClientHead.load(path), tok, SamplingParams(max_new_tokens=max_new_tokens, temperature=0),
                      tok(prompt).input_ids)
    try:
        with LocalChain.load(path, [(0, 30)]) as chain:
            chain.open(decoder.max_length)
            return decode_in_process(decoder, chain.forward)
    finally:
        torch.set_num_threads(threads)


def test_greedy_output_through_the_swarm_equals_local(swarm):
    remote_proc = popen("generate", *ARGS, "--prompt", PROMPT, "--initial-peers", swarm.bootstrap_addr, "--verbose")
    local = local_output(PROMPT)
    out, err = remote_proc.communicate(timeout=240)
    remote = subprocess.CompletedProcess(remote_proc.args, remote_proc.returncode, out, err)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local
    assert remote.stdout.startswith(" Paris")
    assert "route: blocks 0–9 on …" in remote.stderr and "blocks 20–29 on …" in remote.stderr
    assert all("session opened" in s.output() for s in swarm.servers[:3])


def test_two_clients_at_once_each_get_their_own_output(swarm, default_model_path):
    prompts = ["The capital of France is", "One, two, three, four,"]
    procs = [popen("generate", *ARGS, "--prompt", p, "--initial-peers", swarm.bootstrap_addr) for p in prompts]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert [o for o, _ in outputs] == [local_text(default_model_path, p) + "\n" for p in prompts]
    assert outputs[0][0] != outputs[1][0]


def test_a_new_server_appears_in_swarm_health(swarm):
    fourth = swarm.start_server("--blocks", "5:15", name="fourth")  # loads while the first report runs
    report = corolla("swarm", "--model", "default", "--initial-peers", swarm.bootstrap_addr)
    assert report.returncode == 0, report.stderr
    assert report.stdout.rstrip().endswith("uncovered blocks: none")
    peer_id = fourth.wait_for(r"serving blocks 5–14 .* as (\S+);").group(1)
    deadline = time.monotonic() + 60
    while True:
        report = corolla("swarm", "--model", "default", "--initial-peers", swarm.bootstrap_addr)
        assert report.returncode == 0, report.stderr
        if peer_id in report.stdout or time.monotonic() > deadline:
            break
    line = next(x for x in report.stdout.splitlines() if x.startswith(peer_id))
    assert "5–14" in line and "online" in line
    assert "\n    7  2\n" in report.stdout  # block 7 is now covered twice
    fourth.stop()


def huge_step_header() -> bytes:
    """A step announcing a 16 GiB tensor with a 16-byte payload: refused by the tensor limit."""
    import msgpack

    head = msgpack.packb({"type": "step", "session": "?",
                          "tensors": [{"dtype": "float32", "shape": [1, 1 << 20, 4096]}]})
    return len(head).to_bytes(4, "big") + (16).to_bytes(4, "big") + head + bytes(16)


def test_bad_messages_get_error_replies_while_a_session_goes_on(swarm, default_model_path):
    from corolla.core.model import ModelInfo
    from corolla.core.span import Span
    from corolla.p2p.client import SwarmClient, open_client_peer, open_stream
    from corolla.p2p.records import INFERENCE_PROTOCOL
    from corolla.p2p.routing import RouteHop
    from corolla.p2p.session import HopSession
    from corolla.p2p.wire import encode, read_message, write_message

    model = ModelInfo.load(default_model_path)
    h = model.hidden_size
    open_frame = encode({"type": "open", "max_length": 16, "start": 0, "end": 10})
    # Each case: frames sent on a fresh stream after an 'open'; a None frame is the step payload slot.
    cases = {
        "malformed": (False, [b"\x00\x00\x00\x05\x00\x00\x00\x00\xc1\xc1\xc1\xc1\xc1"]),
        "oversized header": (False, [b"\xff\xff\xff\xff\x00\x00\x00\x00"]),
        "oversized tensor": (True, [huge_step_header()]),
        "wrong hidden size": (True, [torch.randn(1, 2, h + 1)]),
        "wrong rank": (True, [torch.randn(2, h)]),
        "wrong batch": (True, [torch.randn(2, 1, h)]),
        "unknown session": (True, ["nope"]),
    }
    x = torch.randn(1, 3 + len(cases), h)

    async def bad_exchange(peer, peer_id, opens: bool, items: list) -> dict:
        stream = await open_stream(peer, peer_id, INFERENCE_PROTOCOL, 10)
        sid = None
        if opens:
            await write_message(stream, open_frame, timeout=10)
            sid = (await read_message(stream, idle_timeout=30, body_timeout=30))[0]["session"]
        for item in items:
            if isinstance(item, torch.Tensor):
                item = encode({"type": "step", "session": sid}, [item])
            elif isinstance(item, str):
                item = encode({"type": "step", "session": item}, [torch.randn(1, 1, h)])
            await write_message(stream, item, timeout=10)
            reply = (await read_message(stream, idle_timeout=30, body_timeout=30))[0]
        await stream.close()
        return reply

    async def main():
        async with open_client_peer([swarm.bootstrap_addr], host="127.0.0.1") as peer:
            client = SwarmClient(peer, model.name, model.hash, model.num_blocks)
            server = next(s for s in await client.servers() if (s.start, s.end) == (0, 10))
            good = await HopSession.open(client, RouteHop(server, 0, 10), 64, 30)
            outputs = [await good.exchange(x[:, :3])]
            replies = {}
            for i, (name, (opens, items)) in enumerate(cases.items()):
                replies[name] = await bad_exchange(peer, server.peer_id, opens, items)
                outputs.append(await good.exchange(x[:, 3 + i:4 + i]))  # the honest session goes on
            await good.close()
            return replies, torch.cat(outputs, dim=1)

    replies, got = trio.run(main)
    codes = {name: (r["type"], r.get("code")) for name, r in replies.items()}
    assert codes == {
        "malformed": ("error", "ProtocolError"),
        "oversized header": ("error", "MessageTooLargeError"),
        "oversized tensor": ("error", "MessageTooLargeError"),
        "wrong hidden size": ("error", "ShapeError"),
        "wrong rank": ("error", "ShapeError"),
        "wrong batch": ("error", "ShapeError"),
        "unknown session": ("error", "UnknownSessionError"),
    }
    assert str(h + 1) in replies["wrong hidden size"]["message"]
    expected = Span.load(default_model_path, 0, 10).forward(x)
    # steps vs one pass over the same tokens differ only by float rounding, relative to the scale
    # of this model's hidden states (their largest values are in the hundreds)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_unusable_peer_addresses_are_reported_plainly(default_model_path):
    bad = corolla("swarm", "--initial-peers", "/ip4/127.0.0.1/tcp/9")
    assert bad.returncode == 2 and "cannot use peer address" in bad.stderr and "Traceback" not in bad.stderr
    gone = corolla("generate", *ARGS, "--prompt", PROMPT, "--initial-peers",
                   "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWQsaHPg8vb7pCsDaVE31hBG38kDJxeK6LewuuCMbWoSps")
    assert gone.returncode == 2 and "none of the initial peers answered" in gone.stderr
    assert "Traceback" not in gone.stderr
