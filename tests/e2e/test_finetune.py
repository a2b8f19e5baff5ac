"""Fine-tuning through a swarm of real server processes serving the default model: `corolla
finetune` lowers the loss, the tuned prompt changes greedy output on held-out names the expected
way, and a client generating on the same servers meanwhile gets exactly what it gets alone."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from corolla.app.demo.processes import LocalSwarm
from tests.tuning_data import HELD_OUT_NAMES, completion, prompt, write_greetings

pytestmark = pytest.mark.slow

STEPS = 10
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
            server.wait_for("serving blocks")
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

    # The tuned prompt through the swarm, for one held-out name ...
    name = HELD_OUT_NAMES[1]
    tuned = corolla("generate", *GEN, "--prompt", prompt(name), "--tuned", str(out), *peers)
    assert tuned.returncode == 0, tuned.stderr
    assert tuned.stdout.startswith(f" Hello {name}")
    # ... and for every held-out name in this process (the same greedy text as through the swarm).
    base, tuned = held_out_texts(default_model_path, None), held_out_texts(default_model_path, out)
    print("base:", base, "\ntuned:", tuned)
    want = [completion(n).split(",")[0] for n in HELD_OUT_NAMES]  # " Hello Rosa"
    assert not any(text.startswith(w) for text, w in zip(base, want, strict=True))
    assert sum(text.startswith(w) for text, w in zip(tuned, want, strict=True)) >= len(HELD_OUT_NAMES) - 1


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
