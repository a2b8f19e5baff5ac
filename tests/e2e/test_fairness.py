"""One greedy peer cannot lock a real server: an attacker holding all the sessions it may open, or
as much cache as it may reserve, or looping long forward requests, leaves an honest client generating
within twice the time it takes on an idle server (both measured here, in the same run)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from corolla.app.demo.processes import LocalSwarm
from corolla.app.swarm.remote import generate_through_swarm
from tests.e2e.test_swarm import local_text

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
TOKENS = 10


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, default_model_path):
    with LocalSwarm(tmp_path_factory.mktemp("fair"), announce_period=3.0) as s:
        s.add_server("--blocks", "0:30", "--max-sessions", "16", "--cache-tokens", "8192", name="shared")
        yield s


def honest_run(swarm, path) -> tuple[str, float]:
    """The honest client's text and seconds, connection and route finding included."""
    from transformers import AutoTokenizer

    from corolla.core.generation import Decoder, SamplingParams
    from corolla.core.head import ClientHead

    tok = AutoTokenizer.from_pretrained(path)
    decoder = Decoder(ClientHead.load(path), tok, SamplingParams(max_new_tokens=TOKENS, temperature=0),
                      tok(PROMPT).input_ids)
    t0 = time.perf_counter()
    text = trio.run(generate_through_swarm, path, decoder, [swarm.bootstrap_addr])
    return text, time.perf_counter() - t0


def wait_for_line(path: Path, pattern: str, proc: subprocess.Popen, timeout: float = 120) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, path.read_text(), re.MULTILINE)
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"the attacker did not start:\n{path.read_text()[-3000:]}")


@pytest.mark.parametrize("attack", ["max sessions", "whole cache", "long forwards"])
def test_an_attacker_cannot_stop_an_honest_client(swarm, default_model_path, attack):
    expected = local_text(default_model_path, PROMPT, TOKENS)
    runs = [honest_run(swarm, default_model_path) for _ in range(2)]  # the first also warms up
    assert all(text == expected for text, _ in runs)
    normal = min(seconds for _, seconds in runs)

    log = swarm.dir / f"attacker-{attack.replace(' ', '-')}.log"
    with open(log, "w") as out:
        attacker = subprocess.Popen([sys.executable, "-m", "tests.e2e.attacker", attack, swarm.bootstrap_addr,
                                     str(default_model_path)], stdout=out, stderr=subprocess.STDOUT,
                                    cwd=Path(__file__).resolve().parents[2])
    try:
        line = wait_for_line(log, r"attacking: holding (\d+) sessions; refused with (.*)$", attacker)
        held, refusals = int(line.group(1)), line.group(2).split(",")
        text, seconds = honest_run(swarm, default_model_path)
    finally:
        attacker.kill()
        attacker.wait(10)
    print(f"{attack}: normal {normal:.2f} s, under attack {seconds:.2f} s ({seconds / normal:.2f}x); "
          f"attacker held {held} sessions, refused with {refusals}")
    assert text == expected
    assert seconds <= 2 * normal, f"{seconds:.2f} s under attack vs {normal:.2f} s normally"
    if attack == "max sessions":
        assert held == 4 and refusals == ["PeerLimitError"]
    elif attack == "whole cache":
        assert refusals[0] == "PeerLimitError" and held == 4
    else:
        assert "PeerLimitError" not in log.read_text()  # the second stream waited, it was not refused
    assert swarm.servers[0].proc.poll() is None
