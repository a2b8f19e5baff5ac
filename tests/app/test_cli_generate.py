"""`corolla generate` as a user runs it: a real process on the default model."""

from __future__ import annotations

import subprocess
import sys

import pytest

ARGS = ["--model", "default", "--prompt", "The capital of France is", "--max-new-tokens", "12", "--greedy"]


def corolla(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "corolla.app", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.mark.slow
def test_chain_of_spans_prints_exactly_what_local_prints(default_model_path):
    local = corolla("generate", *ARGS, "--local")
    spans = corolla("generate", *ARGS, "--local", "--spans", "0:10,10:20,20:30")
    assert local.returncode == 0, local.stderr
    assert spans.returncode == 0, spans.stderr
    assert local.stdout.startswith(" Paris")
    assert spans.stdout == local.stdout


def test_bad_spans_are_refused_with_a_message(default_model_path):
    result = corolla("generate", *ARGS, "--local", "--spans", "0:10,12:30")
    assert result.returncode == 2
    assert "does not follow 10" in result.stderr


def test_model_info(default_model_path):
    result = corolla("model", "info", "default")
    assert result.returncode == 0, result.stderr
    assert "blocks:      30" in result.stdout and "hidden size: 576" in result.stdout


def test_adapter_mistakes_are_refused_before_anything_runs(default_model_path, tmp_path):
    local = corolla("generate", *ARGS, "--local", "--adapter", "greeter")
    assert local.returncode != 0 and "use --adapter with --initial-peers" in local.stderr
    served = corolla("serve", "--model", "default", "--blocks", "0:2", "--adapter", str(tmp_path), timeout=120)
    assert served.returncode != 0 and "has no adapter_config.json: not a PEFT adapter folder" in served.stderr
    assert "Traceback" not in local.stderr + served.stderr


def test_a_declared_block_time_must_be_a_positive_number():
    for bad in ("-1", "0", "nan"):
        served = corolla("serve", "--model", "default", "--blocks", "0:2", "--block-ms", bad, timeout=120)
        assert served.returncode != 0 and "--block-ms must be a positive number of milliseconds" in served.stderr
        assert "Traceback" not in served.stderr


def test_quantized_blocks_are_for_local_runs_only():
    result = corolla("generate", *ARGS, "--initial-peers", "/ip4/127.0.0.1/tcp/9", "--quant", "int4")
    assert result.returncode == 2
    assert "--quant quantizes blocks run in this process: use it with --local" in result.stderr
    assert "Traceback" not in result.stderr
