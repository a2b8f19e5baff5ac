"""Fine-tuning through a swarm of real server processes serving the default model: `corolla
finetune` lowers the loss, the tuned prompt changes greedy output on held-out names the expected
way, and a client generating on the same servers meanwhile gets exactly what it gets alone."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from corolla.app.demo.processes import LocalSwarm
from tests.tuning_data import HELD_OUT_NAMES, prompt, write_greetings

pytestmark = pytest.mark.slow

STEPS = 16
GEN = ["--model", "default", "--greedy", "--max-new-tokens", "8"]


def corolla(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "corolla.app", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, default_model_path):
    with LocalSwarm(tmp_path_factory.mktemp("ft-swarm"), announce_period=3.0) as s:
        for blocks in ("0:10", "10:20", "20:30"):
            s.start_server("--blocks", blocks)
        for server in s.servers:
            server.wait_for("serving block")
        yield s


@pytest.mark.timeout(1800)  # this machine's 2 cores are shared: ~15 s/step under load, 2 s when idle
def test_finetune_through_the_swarm_lowers_the_loss_and_changes_greedy_output(swarm, tmp_path, default_model_path):
    peers = ["--initial-peers", swarm.bootstrap_addr]
    data, out = write_greetings(tmp_path / "greetings.jsonl"), tmp_path / "greet.safetensors"
    probe = ["generate", *GEN, "--prompt", "The capital of France is", *peers]
    alone = corolla(*probe)
    assert alone.returncode == 0, alone.stderr

    train = subprocess.Popen(
        [sys.executable, "-m", "corolla.app", "finetune", "--model", "default", "--data", str(data), "--out", str(out),
         "--steps", str(STEPS), "--lr", "0.1", "--batch-size", "4", "--prompt-length", "8", *peers],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = train.stdout.readline()  # training is under way on the same servers
    assert first.startswith("step 1 loss"), first + train.stderr.read()
    meanwhile = corolla(*probe)
    still_training = train.poll() is None  # so the whole generation ran while training did
    rest, err = train.communicate(timeout=1200)
    assert train.returncode == 0, err
    assert meanwhile.returncode == 0, meanwhile.stderr
    assert still_training
    assert meanwhile.stdout == alone.stdout  # byte-equal: training traffic did not touch this session

    losses = [float(m.group(2)) for m in re.finditer(r"^step (\d+) loss ([\d.]+)$", first + rest, re.M)]
    assert len(losses) == STEPS
    end = sum(losses[-3:]) / 3
    print(f"loss: step 1 {losses[0]:.3f}, last three {end:.3f} ({100 * (1 - end / losses[0]):.0f}% lower)")
    assert end <= 0.7 * losses[0]

    # Held-out names, every block in this process: the target's likelihood rises and greedy text
    # moves towards it ...
    base, tuned = held_out_texts(default_model_path, None), held_out_texts(default_model_path, out)
    base_loss = held_out_loss(default_model_path, None, tmp_path)
    tuned_loss = held_out_loss(default_model_path, out, tmp_path)
    print("base:", base, base_loss, "\ntuned:", tuned, tuned_loss)
    assert tuned_loss <= 0.5 * base_loss
    greeted = [text.startswith(f" Hello {n}") for text, n in zip(tuned, HELD_OUT_NAMES, strict=True)]
    assert not any(text.startswith(f" Hello {n}") or "welcome aboard" in text
                   for text, n in zip(base, HELD_OUT_NAMES, strict=True))
    assert all("welcome aboard" in text for text in tuned) and sum(greeted) >= len(HELD_OUT_NAMES) // 2
    # ... and through the swarm, `generate --tuned` prints the same text.
    remote = corolla("generate", *GEN, "--prompt", prompt(HELD_OUT_NAMES[1]), "--tuned", str(out), *peers)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == tuned[1] + "\n"


def held_out_loss(path, tuned, work) -> float:
    """Mean loss of the held-out completions (nats per token), every block in this process."""
    from transformers import AutoTokenizer

    from corolla.core.head import ClientHead
    from corolla.core.span import Span
    from corolla.core.tuning.data import load_examples
    from corolla.core.tuning.prompts import TunedPrompts
    from corolla.core.tuning.training import LocalBlocks, completion_loss

    tokenizer = AutoTokenizer.from_pretrained(path)
    examples = load_examples(write_greetings(work / "held-out.jsonl", HELD_OUT_NAMES), tokenizer)
    prompts = TunedPrompts.load(tuned) if tuned is not None else None
    with torch.no_grad():
        return float(completion_loss(ClientHead.load(path), prompts, LocalBlocks([Span.load(path, 0, 30)]),
                                     examples, tokenizer.pad_token_id or 0))


def held_out_texts(path, tuned) -> list[str]:
    """Greedy completions of the held-out prompts with every block in this process."""
    import trio

    from corolla.app.chat.reply import ReplyWriter
    from corolla.app.swarm.local import LocalRouteFactory
    from corolla.core.generation import SamplingParams

    async def main():
        writer = ReplyWriter(lambda: path, LocalRouteFactory(path, [(0, 30)]), tuned=tuned)
        params = SamplingParams(temperature=0, max_new_tokens=8)
        return [(await writer.write(prompt(n), params)).text for n in HELD_OUT_NAMES]

    return trio.run(main)


def test_a_tuned_file_is_refused_for_another_model(tmp_path, default_model_path):
    from corolla.core.tuning.prompts import TunedPrompts

    out = tmp_path / "other.safetensors"
    TunedPrompts(4, 64, 6).save(out, "tiny", "0123456789abcdef")
    result = corolla("generate", *GEN, "--prompt", "Hi", "--local", "--tuned", str(out))
    assert result.returncode == 2
    assert "was tuned for model 'tiny'" in result.stderr and "Traceback" not in result.stderr
