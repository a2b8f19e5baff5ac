"""Prompt-tuning steps/s through a loopback swarm of three servers vs every block in this process,
and the servers' memory while they answer backward requests.

Same model, data (tests/tuning_data.py's greetings), prompt and optimizer settings in one run. Swarm
and local rounds alternate (this machine is shared, so the load drifts) and the ratio is taken per
round. Server memory: each server process's resident set sampled every 50 ms, before training and
at its peak during training (psutil).

    python bench/finetune.py [--steps 5] [--rounds 2] [--batch-size 4] [--prompt-length 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

# As every corolla process does (app/cli.py): busy-waiting OpenMP workers collapse on a loaded machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import psutil  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corolla.app.demo.processes import LocalSwarm
from corolla.app.swarm.training import TrainingSwarm
from corolla.core.head import ClientHead
from corolla.core.model import ModelInfo, resolve_model
from corolla.core.span import Span
from corolla.core.tuning.data import batches, load_examples
from corolla.core.tuning.prompts import TunedPrompts
from corolla.core.tuning.training import LocalBlocks, PromptTrainer
from tests.tuning_data import write_greetings

MB = 1024 * 1024


def seconds_per_step(head, tokenizer, examples, info, blocks, args) -> tuple[float, list[float]]:
    torch.manual_seed(0)
    prompts = TunedPrompts(args.prompt_length, info.hidden_size, info.num_blocks, args.method)
    trainer = PromptTrainer(head, prompts, blocks, torch.optim.Adam(prompts.parameters(), lr=0.1),
                            tokenizer.pad_token_id or 0)
    data = batches(examples, args.batch_size)
    trainer.step(next(data))  # warm-up: first calls pay connections and allocator growth
    times, losses = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(trainer.step(next(data)))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), losses


class PeakRss:
    """Samples the resident set of some processes until stopped; keeps each one's peak (bytes)."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = [p.memory_info().rss for p in self.procs]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for i, p in enumerate(self.procs):
                self.peak[i] = max(self.peak[i], p.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--prompt-length", type=int, default=8)
    ap.add_argument("--method", default="prompt", choices=("prompt", "deep-prompt"))
    ap.add_argument("--spans", default="0:10,10:20,20:30")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    path = resolve_model(args.model, progress=False)
    info = ModelInfo.load(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    head = ClientHead.load(path)
    work = Path(tempfile.mkdtemp(prefix="corolla-bench-ft-"))
    examples = load_examples(write_greetings(work / "greetings.jsonl"), tokenizer)
    local = LocalBlocks([Span.load(path, 0, info.num_blocks)])
    tokens = args.batch_size * max(len(e.ids) for e in examples) + args.prompt_length

    with LocalSwarm(work / "swarm", model=args.model, announce_period=3.0) as swarm:
        for blocks in args.spans.split(","):
            swarm.start_server("--blocks", blocks)
        for server in swarm.servers:
            server.wait_for("serving block")
        pids = [s.pid for s in swarm.servers]
        idle = [psutil.Process(p).memory_info().rss for p in pids]
        rows = []
        with TrainingSwarm([swarm.bootstrap_addr], info, host="127.0.0.1") as remote, PeakRss(pids) as rss:
            for r in range(args.rounds):
                s_local, loss_local = seconds_per_step(head, tokenizer, examples, info, local, args)
                s_swarm, loss_swarm = seconds_per_step(head, tokenizer, examples, info, remote.module, args)
                same = max(abs(a - b) for a, b in zip(loss_local, loss_swarm, strict=True))
                rows.append((s_local, s_swarm, same))
                print(f"round {r + 1}: local {1 / s_local:.3f} steps/s, swarm {1 / s_swarm:.3f} steps/s, "
                      f"ratio {s_local / s_swarm:.2f}, largest loss difference {same:.2e}", flush=True)

    print(f"\n{info.name}, {args.method}, batch {args.batch_size} (~{tokens} tokens per step), "
          f"{args.steps} timed steps x {args.rounds} rounds, spans {args.spans}")
    print(f"{'':24}{'steps/s':>10}{'s/step':>10}")
    med_local = statistics.median(r[0] for r in rows)
    med_swarm = statistics.median(r[1] for r in rows)
    print(f"{'one process':24}{1 / med_local:>10.3f}{med_local:>10.2f}")
    print(f"{'swarm (3 servers)':24}{1 / med_swarm:>10.3f}{med_swarm:>10.2f}")
    print(f"swarm / one process speed: {statistics.median(r[0] / r[1] for r in rows):.2f} (median of rounds)")
    print("\nserver memory (resident set, MiB): idle -> peak while training")
    for blocks, before, peak in zip(args.spans.split(","), idle, rss.peak, strict=True):
        print(f"  blocks {blocks:>8}: {before / MB:7.0f} -> {peak / MB:7.0f}  (+{(peak - before) / MB:.0f})")


if __name__ == "__main__":
    main()
