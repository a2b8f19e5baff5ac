"""A CPU server with 4-bit weights (`corolla serve --quant int4`) beside a float32 one, both real
processes over all 30 blocks. The client routes through the int4 server (it announces itself faster)
and checks every step against the float32 server: the int4 server's rounding is not taken for a lie,
the text equals `corolla generate --local --quant int4`, and `corolla swarm` shows each precision."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from corolla.app.demo.processes import LocalSwarm
from corolla.core import int4
from corolla.p2p.names import short_id

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not int4.available(), reason="this PyTorch has no CPU int4 kernel")]

ARGS = ["--model", "default", "--prompt", "The capital of France is", "--max-new-tokens", "10", "--greedy"]


def corolla(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "corolla.app", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_an_int4_server_is_checked_against_float32_without_being_called_a_liar(tmp_path, default_model_path):
    local = corolla("generate", *ARGS, "--local", "--quant", "int4")
    assert local.returncode == 0, local.stderr[-3000:]
    with LocalSwarm(tmp_path, announce_period=3.0) as swarm:
        int4 = swarm.start_server("--blocks", "0:30", "--quant", "int4", "--block-ms", "1", name="int4")
        full = swarm.start_server("--blocks", "0:30", "--block-ms", "50", name="float32")
        ids = {name: server.wait_for(r"serving blocks? .* as (\S+);").group(1)
               for name, server in (("int4", int4), ("float32", full))}
        report = corolla("swarm", "--model", "default", "--initial-peers", swarm.bootstrap_addr, "--punch-wait", "0")
        result = corolla("generate", *ARGS, "--initial-peers", swarm.bootstrap_addr, "--spot-check", "1", "--verbose")
    assert report.returncode == 0, report.stderr[-3000:]
    for name, precision in (("int4", "float32+int4"), ("float32", "float32")):
        line = next(x for x in report.stdout.splitlines() if x.startswith(ids[name]))
        assert re.search(rf" online +{re.escape(precision)} ", line), line
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"route: blocks 0–29 on {short_id(ids['int4'])}" in result.stderr, result.stderr[-3000:]
    # every check passed: none undecided, nobody called a liar
    assert "wrong activations" not in result.stderr and "disagree" not in result.stderr, result.stderr[-3000:]
    assert result.stdout == local.stdout, result.stderr[-3000:]
    plain = corolla("generate", *ARGS, "--local")
    assert plain.returncode == 0 and plain.stdout.startswith(" Paris") and local.stdout.startswith(" Paris")
