"""A server process that returns wrong activations beside two honest `corolla serve` processes: it is
routed first (it claims to be the fastest), answers its first steps honestly (the checked ones) and
then lies. A real `corolla generate` at the default spot-check rate catches it, goes back to its
first wrong output, regenerates from there through an honest server, and prints exactly the text of
a local run: the streamed text never showed a token that was taken back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from corolla.app.demo.processes import LocalSwarm
from corolla.core.model import ModelInfo
from corolla.p2p.client import SwarmClient, open_client_peer
from corolla.p2p.names import short_id
from tests.e2e.test_swarm import local_text

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
TOKENS = 12
HONEST_STEPS = 4  # the prefill (always checked) and 3 decoding steps; then every step is wrong


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, default_model_path):
    with LocalSwarm(tmp_path_factory.mktemp("lying"), announce_period=3.0) as s:
        for name in ("honest-a", "honest-b"):
            s.start_server("--blocks", "0:30", name=name)
        for server in s.servers:
            server.wait_for(r"serving block")
        yield s


async def wait_until_listed(swarm, path, peer_id: str, timeout: float = 60.0) -> None:
    """Until a client finds `peer_id` among the live servers (DHT record and info reply both seen)."""
    model = ModelInfo.load(path)
    async with open_client_peer([swarm.bootstrap_addr], host="127.0.0.1") as peer:
        client = SwarmClient(peer, model.name, model.hash, model.num_blocks)
        with trio.fail_after(timeout):
            while peer_id not in {s.peer_id for s in await client.servers(rediscover=True)}:
                await trio.sleep(0.5)


@pytest.mark.parametrize("mode", ["random", "zero", "scaled"])
def test_a_liar_turning_wrong_later_is_caught_and_the_text_equals_local(swarm, default_model_path, mode):
    liar = subprocess.Popen([sys.executable, "-m", "tests.e2e.liar", mode, str(HONEST_STEPS), swarm.bootstrap_addr,
                             str(default_model_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).resolve().parents[2],
                            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})  # it shares the cores
    try:
        line = liar.stdout.readline()
        assert line.startswith("lying as "), line
        liar_id = line.split()[-1]
        trio.run(wait_until_listed, swarm, default_model_path, liar_id)
        result = subprocess.run(
            [sys.executable, "-m", "corolla.app", "generate", "--model", "default", "--prompt", PROMPT, "--greedy",
             "--max-new-tokens", str(TOKENS), "--initial-peers", swarm.bootstrap_addr, "--verbose"],
            capture_output=True, text=True, timeout=300, check=False)
    finally:
        liar.stdin.close()  # it exits when its stdin closes
        try:
            liar.wait(10)
        except subprocess.TimeoutExpired:
            liar.kill()
            liar.wait(5)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"route: blocks 0–29 on {re.escape(short_id(liar_id))}", result.stderr), result.stderr[-3000:]  # it was used
    assert f"server {short_id(liar_id)} returned wrong activations" in result.stderr, result.stderr[-3000:]
    assert f"final route: blocks 0–29 on {short_id(liar_id)}" not in result.stderr
    # streamed as it was checked: nothing printed was taken back
    assert result.stdout == local_text(default_model_path, PROMPT, TOKENS) + "\n"
    assert "Traceback" not in result.stderr
