"""What push saves where compute costs nothing: a tiny random model (6 blocks, hidden 64) on three
servers of the WAN testbed (scripts/netlab.py; Linux, root), every pair of hosts `--rtt` ms apart.
Per token: client-mediated and pushed medians, their ratio (the arithmetic limit for three servers is
6/4 = 1.5x), the floor of each (2k and k+1 one-way delays) and when the client read each hop's answer
(pushed: the copies kept for replay, then the last server's output). What is left above the floor is
the per-hop cost of Corolla itself (serialization, Noise, Yamux, the testbed's userspace router).

    python bench/wan_floor.py [--rtt 100] [--tokens 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import netlab  # noqa: E402
from tests.models import make_tiny_model  # noqa: E402
from tests.netlab.swarm import REPO, LabSwarm  # noqa: E402

SPANS = (("s1", "0:2"), ("s2", "2:4"), ("s3", "4:6"))


async def both_ways(path: str, bootstrap: str, tokens: int, rounds: int) -> dict:
    """Per way: the median ms per token of each round, and when each hop's answer was read (ms after
    the step was sent) for the median step of the last round."""
    import torch
    import trio

    import corolla.p2p.hop as hop_module
    from corolla.core.model import ModelInfo
    from corolla.p2p.client import SwarmClient, open_client_peer
    from corolla.p2p.session import InferenceSession

    read_at: list[float] = []
    receive = hop_module.HopSession.receive

    async def timed_receive(self, *args, **kwargs):
        answer = await receive(self, *args, **kwargs)
        read_at.append(time.perf_counter())
        return answer

    hop_module.HopSession.receive = timed_receive
    info = ModelInfo.load(path)
    out: dict = {"client": {"medians": []}, "push": {"medians": []}}
    async with open_client_peer([bootstrap]) as peer:
        client = SwarmClient(peer, info.name, info.hash, info.num_blocks)
        for _ in range(60):
            if len(await client.servers(fresh=True, rediscover=True)) >= len(SPANS):
                break
            await trio.sleep(1)
        for _ in range(rounds):
            for way in ("push", "client"):
                async with InferenceSession(client, tokens + 8, push=way == "push") as session:
                    await session.forward(torch.randn(1, 5, info.hidden_size))
                    steps = []
                    for _ in range(tokens):
                        read_at.clear()
                        t0 = time.perf_counter()
                        await session.forward(torch.randn(1, 1, info.hidden_size))
                        steps.append((1000 * (time.perf_counter() - t0), [round(1000 * (t - t0)) for t in read_at]))
                    steps.sort()
                    out[way]["medians"].append(steps[len(steps) // 2][0])
                    out[way]["reads"] = steps[len(steps) // 2][1]
                    out[way]["hops"] = len(session.hops)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rtt", type=float, default=100.0, help="round trip in ms between any two hosts")
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--inner", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        import trio

        print(json.dumps(trio.run(both_ways, *args.inner, args.tokens, args.rounds)))
        return 0
    why = netlab.missing()
    if why:
        print(f"bench/wan_floor.py: {why}", file=sys.stderr)
        return 2
    os.environ.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    hosts = ["boot", *(name for name, _ in SPANS), "client"]
    topo = netlab.Topology([netlab.Host(h, delay_ms=args.rtt / 4) for h in hosts])
    with tempfile.TemporaryDirectory() as tmp, netlab.Lab(topo, prefix="clfloor") as lab, \
            LabSwarm(lab, Path(tmp) / "swarm", announce_period=2.0) as swarm:
        model = make_tiny_model(Path(tmp) / "model", "llama")
        swarm.start_bootstrap("boot")
        for host, blocks in SPANS:
            swarm.start_server(host, "--model", str(model), "--blocks", blocks, name=host)
        for server in swarm.servers:
            server.wait_for(r"serving block")
        r = lab.run("client", [sys.executable, __file__, "--tokens", str(args.tokens), "--rounds", str(args.rounds),
                               "--inner", str(model), swarm.bootstrap_addr], cwd=REPO, timeout=900, env=os.environ)
    if r.returncode != 0:
        print(r.stderr[-3000:], file=sys.stderr)
        return 1
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    k, one_way = seen["push"]["hops"], args.rtt / 2
    floors = {"client": 2 * k * one_way, "push": (k + 1) * one_way}
    med = {way: statistics.median(seen[way]["medians"]) for way in floors}
    print(f"tiny model, {k} servers, {args.rtt:g} ms rtt between any two hosts, {args.tokens} tokens x "
          f"{args.rounds} rounds; load {os.getloadavg()[0]:.1f}")
    print(f"{'way':<7} {'ms/token':>8} {'floor':>6} {'above':>6}  rounds          answers read at (ms)")
    for way in ("client", "push"):
        print(f"{way:<7} {med[way]:8.1f} {floors[way]:6.0f} {med[way] - floors[way]:6.1f}  "
              f"{', '.join(f'{m:.0f}' for m in seen[way]['medians']):<15} {seen[way]['reads']}")
    print(f"push/client-mediated tokens/s: {med['client'] / med['push']:.2f} (limit {2 * k / (k + 1):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
