"""The swarm with servers on a CUDA GPU: same greedy text as --local, and tokens/s of each.

Needs a CUDA machine. Builds a random Llama-shaped model (no download), starts a bootstrap peer and
two `corolla serve --device cuda` processes on 127.0.0.1, then generates through them and locally.
Wall time includes starting the client process and loading the model; the servers' logs give the
session's own duration.

    .venv/bin/python bench/gpu_swarm.py [--hidden 1024] [--layers 16] [--tokens 32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def build_model(folder: Path, hidden: int, layers: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.models import word_level_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1000, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64,
                         num_key_value_heads=max(1, hidden // 256), initializer_range=0.3,
                         eos_token_id=2, bos_token_id=1, pad_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder, max_shard_size="200MB")
    word_level_tokenizer(1000).save_pretrained(folder)
    return folder


def generate(model: Path, where: list[str], tokens: int) -> tuple[str, float]:
    args = [sys.executable, "-m", "corolla.app", "generate", "--model", str(model), "--prompt", "w5 w17 w200 w9 w31",
            "--greedy", "--max-new-tokens", str(tokens), "--no-stream", *where]
    started = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600)
    return out.stdout.strip(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    from corolla.app.demo.processes import LocalSwarm

    work = Path(tempfile.mkdtemp(prefix="corolla-gpu-"))
    model = build_model(work / "model", args.hidden, args.layers)
    half = args.layers // 2
    rows = []
    for dtype in ("float32", "bfloat16"):
        with LocalSwarm(work / f"swarm-{dtype}", model=str(model)) as swarm:
            for blocks in (f"0:{half}", f"{half}:{args.layers}"):
                swarm.add_server("--blocks", blocks, "--device", "cuda", "--dtype", dtype)
            swarm_text, swarm_s = generate(model, ["--initial-peers", swarm.bootstrap_addr], args.tokens)
        rows.append((f"swarm, 2 servers on cuda, {dtype}", swarm_text, swarm_s))
    local_text, local_s = generate(model, ["--local"], args.tokens)
    rows.append(("--local on the CPU, float32", local_text, local_s))
    print(f"model: random Llama, hidden {args.hidden}, {args.layers} blocks; {args.tokens} new tokens (greedy)")
    print(f"{'run':<36} {'wall s':>7}  same text as --local")
    for name, text, seconds in rows:
        print(f"{name:<36} {seconds:>7.1f}  {text == local_text}")
    print(f"\n--local text: {local_text[:120]}")


if __name__ == "__main__":
    main()
