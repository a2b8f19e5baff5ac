"""Concurrent sessions through one real server whose clients are separate processes.

The server (a ServerNode on a py-libp2p host, holding every block of the span bench/headline.py
built) runs in the benchmark's process; each client is its own Python process with its own libp2p
peer and `InferenceSession`, stepping random one-token hidden states (no head: the server's
throughput is what is measured, and a client's host work runs beside the others', as on separate
machines). Tokens/s counts the steps made while every client was decoding, from each one's third
step on.

    python bench/headline_procs.py --client BOOTSTRAP_ADDR --hidden H --steps N   (one client)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from corolla.core.span import Span
from corolla.p2p.client import SwarmClient, open_client_peer
from corolla.p2p.discovery import announce
from corolla.p2p.fairness import PeerQuota
from corolla.p2p.host import open_peer
from corolla.p2p.server import ServerNode
from corolla.p2p.session import InferenceSession

HOST = "127.0.0.1"
NAME, HASH = "headline", "0" * 64
START_DELAY_S = 20.0  # from starting the client processes to their first step (imports, connecting)


async def separate_clients(span: Span, counts, steps: int, log) -> dict:
    """Total tokens/s of n client processes decoding at once through one server."""
    out: dict = {}
    async with open_peer(create_new_key_pair(), host=HOST) as boot, trio.open_nursery() as nursery:
        node = ServerNode(span, NAME, HASH, cache_tokens=1 << 16, max_sessions=64,
                          peer_quota=PeerQuota(sessions=64, cache_tokens=1 << 16))
        node.measure_throughput(steps=4)

        async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with open_peer(create_new_key_pair(), host=HOST, initial_peers=[boot.addrs[0]]) as peer:
                node.attach(peer.host)
                await announce(peer, NAME, HASH, node.blocks)
                task_status.started()
                await trio.sleep_forever()

        await nursery.start(serve)
        args = [sys.executable, __file__, "--client", boot.addrs[0], "--hidden", str(span.hidden_size),
                "--blocks", str(span.num_blocks)]
        await trio.run_process(args + ["--steps", "4"], capture_stdout=True)  # warm-up: passes captured
        for n in counts:
            steps0, batches0 = node.batcher.steps, node.batcher.batches
            results: list = [None] * n

            start_at = time.time() + START_DELAY_S  # every client steps from then on, set up or not

            async def one(i: int) -> None:
                done = await trio.run_process(args + ["--steps", str(steps), "--start-at", str(start_at)],
                                              capture_stdout=True)
                results[i] = json.loads(done.stdout.decode().strip().splitlines()[-1])

            async with trio.open_nursery() as clients:
                for i in range(n):
                    clients.start_soon(one, i)
            start = max(m[2] for m in results)
            end = min(m[-1] for m in results)
            made = sum(sum(1 for t in m if start < t <= end) for m in results)
            batches = max(1, node.batcher.batches - batches0)
            out[n] = {"tokens_per_s": made / max(end - start, 1e-9),
                      "mean_batch": (node.batcher.steps - steps0) / batches}
            log(f"  {n} client processes: {out[n]['tokens_per_s']:.1f} tokens/s, mean batch {out[n]['mean_batch']:.2f}")
        nursery.cancel_scope.cancel()
    return out


async def client(boot: str, hidden: int, blocks: int, steps: int, start_at: float) -> list[float]:
    """Open a session and prefill 8 tokens, then from `start_at` (time.time) step `steps` one-token
    hidden states; the wall time (comparable across processes) after each step."""
    async with open_client_peer([boot], host=HOST) as peer:
        swarm = SwarmClient(peer, NAME, HASH, blocks)
        await swarm.servers(fresh=True)
        async with InferenceSession(swarm, steps + 16) as session:
            await session.forward(torch.randn(1, 8, hidden, dtype=torch.bfloat16))
            await trio.sleep(max(0.0, start_at - time.time()))
            marks = []
            x = torch.randn(1, 1, hidden, dtype=torch.bfloat16)
            for _ in range(steps):
                await session.forward(x)
                marks.append(time.time())
            return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", required=True, help="bootstrap address")
    parser.add_argument("--hidden", type=int, required=True)
    parser.add_argument("--blocks", type=int, required=True)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--start-at", type=float, default=0.0, help="time.time() of the first step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(trio.run(client, args.client, args.hidden, args.blocks, args.steps, args.start_at)))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
