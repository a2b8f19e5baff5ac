"""Tokens/s through a loopback swarm of three servers vs all blocks in this process (`--local`).

Same model, prompt and greedy decoding in one run. Local and swarm runs alternate for a few rounds
(this machine is shared, so the load drifts) and the ratio is taken per round. Prints the median
time per token, the speed ratio, and where a swarm token's time goes: server compute, and the rest of
each hop (serialization, libp2p, loopback TCP), which is the overhead per token per hop.

    python bench/swarm_overhead.py [--tokens 32] [--rounds 3] [--spans 0:10,10:20,20:30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corolla.app.demo.processes import LocalSwarm
from corolla.core.chain import LocalChain
from corolla.core.generation import Decoder, SamplingParams
from corolla.core.head import ClientHead
from corolla.core.model import ModelInfo, resolve_model
from corolla.p2p.client import SwarmClient, open_client_peer
from corolla.p2p.session import InferenceSession

PROMPT = "The history of the city of Paris begins"


def new_decoder(path: Path, tokens: int) -> Decoder:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    params = SamplingParams(max_new_tokens=tokens, temperature=0)
    return Decoder(ClientHead.load(path), tok, params, tok(PROMPT).input_ids, eos_ids=set())


def local_run_in_child(model: str, tokens: int, quant: str = "none") -> tuple[list[float], str]:
    """The baseline runs in its own process, as `--local` would (with the same OpenMP wait policy as
    every process here: on a shared 2-core machine, busy-waiting OpenMP workers collapse under load),
    its blocks quantized as `quant` says."""
    out = subprocess.run([sys.executable, __file__, "--model", model, "--tokens", str(tokens), "--local-only",
                          "--quant", quant],
                         check=True, capture_output=True, text=True, env=os.environ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["times"], result["text"]


def local_run(path: Path, tokens: int, quant: str = "none") -> tuple[list[float], str]:
    """Seconds per decoded token (prefill excluded; the head's work included) and the text."""
    decoder = new_decoder(path, tokens)
    with LocalChain.load(path, [(0, ModelInfo.load(path).num_blocks)], quant=quant) as chain:
        chain.open(decoder.max_length)
        hidden = decoder.advance(chain.forward(decoder.start()))
        times = []
        while hidden is not None:
            t0 = time.perf_counter()
            hidden = decoder.advance(chain.forward(hidden))
            times.append(time.perf_counter() - t0)
        return times, decoder.text


async def swarm_run(path: Path, tokens: int, bootstrap: str) -> dict:
    model = ModelInfo.load(path)
    decoder = new_decoder(path, tokens)
    async with open_client_peer([bootstrap], host="127.0.0.1") as peer:
        client = SwarmClient(peer, model.name, model.hash, model.num_blocks)
        async with InferenceSession(client, decoder.max_length) as session:
            hidden = decoder.advance(await session.forward(decoder.start()))
            token, step, compute = [], [], []
            while hidden is not None:
                t0 = time.perf_counter()
                out = await session.forward(hidden)
                t1 = time.perf_counter()
                hidden = decoder.advance(out)
                token.append(time.perf_counter() - t0)
                step.append(t1 - t0)
                compute.append(sum(h.last_compute_ms for h in session.hops) / 1000)
            return {"token": token, "step": step, "compute": compute, "text": decoder.text,
                    "hops": len(session.route)}


def med_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spans", default="0:10,10:20,20:30")
    parser.add_argument("--local-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quant", default="none", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = resolve_model(args.model)
    if args.local_only:
        local_run(path, 4, args.quant)  # warm up
        times, text = local_run(path, args.tokens, args.quant)
        print(json.dumps({"times": times, "text": text}))
        return 0
    # This process shares the cores with three servers (see LocalSwarm): no busy-waiting workers.
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # inherited by the baseline's process too
    rows = []
    with tempfile.TemporaryDirectory() as tmp, LocalSwarm(Path(tmp), model=args.model) as swarm:
        for blocks in args.spans.split(","):
            swarm.start_server("--blocks", blocks)
        for server in swarm.servers:
            server.wait_for("serving block")
        trio.run(swarm_run, path, 4, swarm.bootstrap_addr)  # warm up
        for _ in range(args.rounds):
            local_times, local_text = local_run_in_child(args.model, args.tokens)
            s = trio.run(swarm_run, path, args.tokens, swarm.bootstrap_addr)
            per_hop = [(st - c) / s["hops"] for st, c in zip(s["step"], s["compute"], strict=True)]
            rows.append({"local": med_ms(local_times), "swarm": med_ms(s["token"]), "compute": med_ms(s["compute"]),
                         "hop": med_ms(per_hop), "same": s["text"] == local_text, "hops": s["hops"]})
    print(f"model {ModelInfo.load(path).name}, {args.tokens} greedy tokens per run, spans {args.spans}, "
          f"{rows[0]['hops']} hops; median ms per token")
    print(f"{'round':>5} {'local':>8} {'swarm':>8} {'compute':>8} {'hop ovh':>8} {'ratio':>6} {'same text':>9}")
    for i, r in enumerate(rows):
        print(f"{i:>5} {r['local']:8.2f} {r['swarm']:8.2f} {r['compute']:8.2f} {r['hop']:8.2f} "
              f"{r['local'] / r['swarm']:6.2f} {r['same']!s:>9}")
    ratio = statistics.median(r["local"] / r["swarm"] for r in rows)
    hop = statistics.median(r["hop"] for r in rows)
    print(f"speed ratio swarm/local (median of rounds): {ratio:.2f}   target >= 0.6")
    print(f"overhead per token per hop (median): {hop:.2f} ms   target <= 5 ms")
    print("(compute = the servers' own step times; hop ovh = (swarm step - compute) / hops: "
          "serialization, libp2p streams, loopback TCP, event loops)")
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
