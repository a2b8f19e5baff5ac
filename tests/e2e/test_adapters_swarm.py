"""LoRA adapters through a swarm of real server processes: `corolla serve --adapter DIR` offers an
adapter made by PEFT, `corolla generate --adapter NAME` gives PEFT's own greedy output token for token
and routes only through servers offering it, a session without the adapter on the same server gets
exactly what it gets alone, and an adapter no server offers is refused in plain words."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import trio

from corolla.app.demo.processes import LocalSwarm
from corolla.p2p.names import short_id
from tests.adapters import make_lora, peft_model
from tests.models import make_tiny_model

pytestmark = pytest.mark.slow

PROMPT = "w5 w17 w30 w42 w8 w100"
NEW_TOKENS = 12
SERVING = r"serving blocks? (\S+) of .* as (\S+);"


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    """Blocks 0:3 on a server with the adapter and on one without it; blocks 3:6 on a server with it."""
    root = tmp_path_factory.mktemp("lora-swarm")
    model = make_tiny_model(root / "llama", "llama")
    adapter = make_lora(model, root / "greeter", seed=7)
    with LocalSwarm(root / "swarm", model=str(model), announce_period=3.0) as s:
        with_adapter = [s.start_server("--blocks", blocks, "--adapter", str(adapter), name=f"lora-{i}")
                        for i, blocks in enumerate(("0:3", "3:6"))]
        plain = s.start_server("--blocks", "0:3", name="plain")
        peers = {}
        for server in [*with_adapter, plain]:
            peers[server.name] = server.wait_for(SERVING).group(2)
        with_adapter[0].wait_for("LoRA adapters: greeter")
        yield s, model, adapter, peers


def generate(s: LocalSwarm, model, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "corolla.app", "generate", "--model", str(model), "--prompt", PROMPT, "--greedy",
         "--max-new-tokens", str(NEW_TOKENS), "--spot-check", "0", "--initial-peers", s.bootstrap_addr, *extra],
        capture_output=True, text=True, timeout=240, check=False)


def peft_words(model, adapter) -> list[str]:
    """PEFT's greedy continuation of the prompt, as words (one word is one token here)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = peft_model(model, adapter).generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    new = out[0, ids.shape[1]:].tolist()
    if tokenizer.eos_token_id in new:
        new = new[:new.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new).split()


def test_generation_with_an_adapter_equals_peft_and_uses_only_servers_offering_it(swarm):
    s, model, adapter, peers = swarm
    remote = generate(s, model, "--adapter", "greeter", "--verbose")
    assert remote.returncode == 0, remote.stderr
    want = peft_words(model, adapter)
    assert len(want) >= 4, "the tiny model should say something"
    assert remote.stdout.split() == want
    routes = [line for line in remote.stderr.splitlines() if "route:" in line]
    assert routes and all(short_id(peers["plain"]) not in line for line in routes), remote.stderr
    assert short_id(peers["lora-0"]) in routes[0] and short_id(peers["lora-1"]) in routes[0]
    base = generate(s, model)
    assert base.returncode == 0, base.stderr
    assert base.stdout.split() != want, "the adapter should change the greedy output"


def test_a_session_without_the_adapter_on_the_same_server_is_unchanged(swarm):
    s, model, _, _ = swarm
    alone = generate(s, model)
    assert alone.returncode == 0, alone.stderr
    cmd = [sys.executable, "-m", "corolla.app", "generate", "--model", str(model), "--prompt", PROMPT, "--greedy",
           "--max-new-tokens", str(NEW_TOKENS * 4), "--spot-check", "0", "--initial-peers", s.bootstrap_addr,
           "--adapter", "greeter"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as adapted:
        meanwhile = generate(s, model)  # blocks 3:6 have one server: both sessions are on it
        adapted_out, adapted_err = adapted.communicate(timeout=240)
    assert adapted.returncode == 0, adapted_err
    assert meanwhile.returncode == 0, meanwhile.stderr
    assert meanwhile.stdout == alone.stdout  # byte-equal


def test_an_adapter_no_server_offers_is_refused_in_plain_words(swarm):
    s, model, _, _ = swarm
    result = generate(s, model, "--adapter", "nope")
    assert result.returncode != 0
    assert "offers the adapter 'nope' (adapters offered: greeter)" in result.stderr
    assert "Traceback" not in result.stderr
    report = subprocess.run([sys.executable, "-m", "corolla.app", "swarm", "--model", str(model), "--punch-wait", "0",
                             "--initial-peers", s.bootstrap_addr], capture_output=True, text=True, timeout=120,
                            check=False)
    assert report.returncode == 0, report.stderr
    assert "LoRA adapters: greeter (0–2, 3–5)" in report.stdout
    assert trio.run(offered_adapters, s, model) == ["greeter"]  # what the chat's adapter list shows


async def offered_adapters(s: LocalSwarm, model) -> list[str]:
    from corolla.app.swarm.connection import SwarmConnection
    from corolla.app.swarm.remote import SwarmRouteFactory

    async with trio.open_nursery() as nursery:
        routes = SwarmRouteFactory(SwarmConnection([s.bootstrap_addr], lambda: model, lambda: nursery))
        try:
            return await routes.offered_adapters()
        finally:
            await routes.aclose()
            nursery.cancel_scope.cancel()
