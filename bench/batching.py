"""Tokens/s of 1, 2, 4 (…) concurrent clients through one server, whose batcher runs their steps together.

One server process serves every block of the model; one client process runs N sessions at once,
each decoding the same number of greedy tokens with its own decoder (the head's work in worker
threads). Total new tokens over wall time, prefill included, and the ratio against one client in
the same run. Rounds alternate the client counts (this machine is shared, so the load drifts).

    python bench/batching.py [--model default] [--tokens 32] [--clients 1,2,4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corolla.app.demo.processes import LocalSwarm
from corolla.core.generation import Decoder, SamplingParams, decode
from corolla.core.head import ClientHead
from corolla.core.model import ModelInfo, resolve_model
from corolla.p2p.client import SwarmClient, open_client_peer
from corolla.p2p.session import InferenceSession

PROMPTS = ["The history of the city of Paris begins", "A recipe for bread needs", "In the winter of 1812",
           "The main parts of a computer are", "Rivers of Europe include", "The rules of chess say",
           "Photosynthesis is the process", "A short poem about the sea:"]


async def clients_run(path: Path, head: ClientHead, tokenizer, bootstrap: str, n: int, tokens: int) -> dict:
    model = ModelInfo.load(path)
    params = SamplingParams(max_new_tokens=tokens, temperature=0)
    done: list[int] = []
    async with open_client_peer([bootstrap], host="127.0.0.1") as peer:
        client = SwarmClient(peer, model.name, model.hash, model.num_blocks)
        await client.servers(fresh=True)
        async with AsyncExitStack() as stack:  # each session entered and left in turn, nested
            sessions = []
            for i in range(n):
                decoder = Decoder(head, tokenizer, params, tokenizer(PROMPTS[i % len(PROMPTS)]).input_ids,
                                  eos_ids=set())
                sessions.append((decoder, await stack.enter_async_context(
                    InferenceSession(client, decoder.max_length))))
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for decoder, session in sessions:
                    async def one(decoder=decoder, session=session) -> None:
                        await decode(decoder, session.forward, offload=trio.to_thread.run_sync)
                        done.append(len(decoder.token_ids))
                    nursery.start_soon(one)
            seconds = time.perf_counter() - t0
    return {"tokens": sum(done), "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--clients", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    path = resolve_model(args.model)
    counts = [int(c) for c in args.clients.split(",")]
    head, tokenizer = ClientHead.load(path), AutoTokenizer.from_pretrained(path)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # the server shares the cores with this process
    rates: dict[int, list[float]] = {n: [] for n in counts}
    load_before = os.getloadavg()[0]  # others share this machine: the ratios are only as good as the load allows
    with tempfile.TemporaryDirectory() as tmp, LocalSwarm(Path(tmp), model=args.model) as swarm:
        swarm.start_server("--blocks", f"0:{ModelInfo.load(path).num_blocks}")
        swarm.servers[0].wait_for("serving block")
        trio.run(clients_run, path, head, tokenizer, swarm.bootstrap_addr, 2, 4)  # warm up
        for _ in range(args.rounds):
            for n in counts:
                r = trio.run(clients_run, path, head, tokenizer, swarm.bootstrap_addr, n, args.tokens)
                rates[n].append(r["tokens"] / r["seconds"])
    base = statistics.median(rates[counts[0]])
    print(f"model {path.name}, {args.tokens} greedy tokens per client, one server, median of {args.rounds} rounds; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores)")
    print(f"{'clients':>8} {'tokens/s':>10} {'per client':>11} {'x ' + str(counts[0]) + ' client':>11}")
    for n in counts:
        rate = statistics.median(rates[n])
        print(f"{n:>8} {rate:>10.1f} {rate / n:>11.1f} {rate / base:>11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
