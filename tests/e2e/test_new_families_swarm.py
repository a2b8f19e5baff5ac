"""Newer families through a swarm of real processes: a bootstrap peer and `corolla serve` servers
on 127.0.0.1, each holding part of a tiny Gemma 2 (sliding and global layers, soft-capping) or
Mixtral (every expert of its blocks), and `corolla generate` clients routing through them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from corolla.app.demo.processes import LocalSwarm
from corolla.p2p.names import blocks_text
from tests.family_models import make_family_model

pytestmark = pytest.mark.slow

PROMPT = "w5 w17 w30 w42 w8 w100"
NEW_TOKENS = 14
MODELS = {"gemma2": ("0:1", "1:4"), "mixtral": ("0:3", "3:4")}


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    root = tmp_path_factory.mktemp("new-families")
    paths = {name: make_family_model(root / name, name) for name in MODELS}
    with LocalSwarm(root / "swarm", announce_period=3.0) as s:
        for name, spans in MODELS.items():
            s.model = str(paths[name])  # servers of both models share one bootstrap peer
            for blocks in spans:
                s.start_server("--blocks", blocks, name=f"{name}-{blocks.replace(':', '-')}")
        for server in s.servers:
            server.wait_for("serving block")
        yield s, paths


def local_tokens(path) -> tuple[list[int], str]:
    """Greedy tokens and text of all blocks in this process, with the client's own head."""
    from transformers import AutoTokenizer

    from corolla.core.chain import LocalChain
    from corolla.core.generation import Decoder, SamplingParams, decode_in_process
    from corolla.core.head import ClientHead

    tokenizer = AutoTokenizer.from_pretrained(path)
    decoder = Decoder(ClientHead.load(path), tokenizer, SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0),
                      tokenizer(PROMPT).input_ids)
    with LocalChain.load(path, [(0, 4)]) as chain:
        chain.open(decoder.max_length)
        text = decode_in_process(decoder, chain.forward)
    return decoder.token_ids, text


def reference_tokens(path, prompt_ids: list[int], n: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_output_through_the_swarm_equals_local(swarm, name):
    s, paths = swarm
    path = paths[name]
    remote = subprocess.run(
        [sys.executable, "-m", "corolla.app", "generate", "--model", str(path), "--prompt", PROMPT, "--greedy",
         "--max-new-tokens", str(NEW_TOKENS), "--initial-peers", s.bootstrap_addr, "--verbose"],
        capture_output=True, text=True, timeout=240, check=False)
    assert remote.returncode == 0, remote.stderr
    tokens, text = local_tokens(path)
    from transformers import AutoTokenizer

    prompt_ids = AutoTokenizer.from_pretrained(path)(PROMPT).input_ids
    assert tokens == reference_tokens(path, prompt_ids, len(tokens))
    assert text.strip(), "the tiny model should say something"
    assert remote.stdout == text + "\n"
    first, second = MODELS[name]
    said = [blocks_text(*map(int, spans.split(":"))) for spans in (first, second)]  # "0:3" -> "blocks 0–2"
    assert f"route: {said[0]} on" in remote.stderr and f"{said[1]} on" in remote.stderr
    served = [srv for srv in s.servers if srv.name.startswith(name)]
    assert all("session opened" in srv.output() for srv in served)
