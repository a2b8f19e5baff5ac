"""Memory added by loading a third of the default model's blocks vs loading the whole model.

Each measurement runs in a fresh process: resident memory after imports, then after loading and
one forward pass (weights are memory-mapped, so pages count once touched), and the process's peak. Prints a table and the ratio (target: a third of the blocks costs <= 0.4 of
the whole model).

    .venv/bin/python bench/span_memory.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(kind: str) -> None:
    import gc

    import torch
    import transformers  # noqa: F401

    from corolla.core.model import resolve_model
    from corolla.core.span import Span

    path = resolve_model("default", progress=False)
    gc.collect()
    before = _rss_mb()
    if kind == "third":
        loaded = Span.load(path, 10, 20)
    elif kind == "all-blocks":
        loaded = Span.load(path, 0, 30)
    else:
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(path)
    # Weights are memory-mapped from the shards: run once so every page is really resident.
    with torch.inference_mode():
        if kind == "whole":
            loaded(torch.tensor([[1, 2, 3, 4]]))
        else:
            loaded(torch.randn(1, 4, loaded.hidden_size))
    gc.collect()
    params = sum(p.numel() for p in loaded.parameters())
    print(json.dumps({"added": _rss_mb() - before, "peak_added": _peak_mb() - before, "params": params}))


def measure(kind: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = {
        "blocks 10:20 (one third)": measure("third"),
        "blocks 0:30 (every block)": measure("all-blocks"),
        "whole model (transformers)": measure("whole"),
    }
    print(f"{'what was loaded':<28} {'params':>12} {'added MB':>10} {'peak added MB':>14}")
    for name, r in rows.items():
        print(f"{name:<28} {r['params']:>12,} {r['added']:>10.1f} {r['peak_added']:>14.1f}")
    third, whole = rows["blocks 10:20 (one third)"], rows["whole model (transformers)"]
    ratio = third["added"] / whole["added"]
    peak_ratio = third["peak_added"] / whole["peak_added"]
    print(f"\nratio, one third of the blocks / whole model: resident {ratio:.3f}, peak {peak_ratio:.3f} "
          f"(target <= 0.4): {'OK' if max(ratio, peak_ratio) <= 0.4 else 'MISSED'}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
