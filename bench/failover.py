"""Recovery time of an inference session when a server in use fails, for several history lengths.

A loopback swarm of the default model: blocks 0:10 and 20:30 on one server each, 10:20 on three.
- "replay" rows move the hop of blocks 10:20 to another server on request: reroute + replay of the
  stored history (one prefill on the replacement), no detection involved;
- "crash" rows kill -9 the server of blocks 10:20 in use 5 ms into a step: detection (from the kill
  to the client noticing) + reroute + replay; "step total" is that whole step.
A frozen server (SIGSTOP) is detected by the step timeout instead (5 s by default), see the tests.

    python bench/failover.py [--replay 50,100,250,500,1000] [--crash 100,500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # this process shares 2 cores with five servers

import torch
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corolla.app.demo.processes import LocalSwarm
from corolla.core.head import ClientHead
from corolla.core.model import ModelInfo, resolve_model
from corolla.p2p.client import SwarmClient, open_client_peer
from corolla.p2p.session import FailoverEvent, InferenceSession

MIDDLE = 15  # a block of the span served three times


def history(head: ClientHead, tokens: int, vocab: int) -> torch.Tensor:
    """Embeddings of random tokens: the first hop's inputs for a conversation of `tokens` tokens."""
    g = torch.Generator().manual_seed(tokens)
    return head.embed(torch.randint(0, vocab, (1, tokens), generator=g))


async def measure(path: Path, bootstrap: str, swarm: LocalSwarm, replay: list[int], crash: list[int]) -> list:
    model = ModelInfo.load(path)
    head = ClientHead.load(path)
    vocab = model.config.vocab_size
    by_peer = {s.wait_for(r"serving blocks? .* as (\S+);").group(1): s for s in swarm.servers}
    rows = []
    events: list[tuple[float, FailoverEvent]] = []
    killed_at = 0.0

    def on_event(event: FailoverEvent) -> None:
        events.append((time.perf_counter(), event))

    async def kill_soon(server, delay: float) -> None:
        nonlocal killed_at
        await trio.sleep(delay)
        killed_at = time.perf_counter()
        server.kill()  # SIGKILL

    async with open_client_peer([bootstrap], host="127.0.0.1") as peer:
        client = SwarmClient(peer, model.name, model.hash, model.num_blocks)
        for kind, lengths in (("replay", replay), ("crash", crash)):
            for n in lengths:
                events.clear()
                async with InferenceSession(client, n + 8, on_event=on_event) as session:
                    await session.forward(history(head, n, vocab))
                    next_token = history(head, 1, vocab)
                    t0 = time.perf_counter()
                    if kind == "replay":
                        await session.reroute(MIDDLE)
                    else:  # killed while the step is under way (the first hop is still computing)
                        hop = next(h for h in session.route if h.start <= MIDDLE < h.end)
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(kill_soon, by_peer[hop.peer_id], 0.005)
                            await session.forward(next_token)
                    total = time.perf_counter() - t0
                (at, event), = events
                noticed = at - event.seconds
                detect = noticed - killed_at if kind == "crash" else 0.0
                rows.append((kind, n, event.end - event.start, len(event.to_peers), detect, event.seconds, total))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replay", default="50,100,250,500,1000")
    parser.add_argument("--crash", default="100,500")
    args = parser.parse_args()
    replay = [int(x) for x in args.replay.split(",") if x]
    crash = [int(x) for x in args.crash.split(",") if x]
    if len(crash) > 2:
        parser.error("at most two crashes: three servers hold blocks 10:20 and one must remain")
    path = resolve_model("default")
    with tempfile.TemporaryDirectory() as tmp, LocalSwarm(Path(tmp)) as swarm:
        for blocks in ("0:10", "20:30", "10:20", "10:20", "10:20"):
            swarm.start_server("--blocks", blocks, "--cache-tokens", "4096")
        for server in swarm.servers:
            server.wait_for("serving block")
        rows = trio.run(measure, path, swarm.bootstrap_addr, swarm, replay, crash)
    print("recovery of blocks 10:20 of the default model (ms); history = tokens replayed")
    print(f"{'kind':<7}{'history':>8}{'blocks':>7}{'to':>4}{'detect':>9}{'reroute+replay':>16}{'step total':>12}")
    for kind, n, blocks, to, detect, recover, total in rows:
        print(f"{kind:<7}{n:>8}{blocks:>7}{to:>4}{1000 * detect:>9.0f}{1000 * recover:>16.0f}{1000 * total:>12.0f}")
    crashes = [r for r in rows if r[0] == "crash"]
    r500 = [r for r in rows if r[1] == 500]
    if crashes:
        print(f"crash detection: max {1000 * max(r[4] for r in crashes):.0f} ms   target < 1000 ms")
    if r500:
        print(f"replay of 500 tokens: max {1000 * max(r[5] for r in r500):.0f} ms   target < 2000 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
