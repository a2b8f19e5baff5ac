"""The default model across a WAN (the testbed of scripts/netlab.py; Linux, root): tokens/s through
three servers with 0 / 20 / 50 / 100 / 200 ms round trip on every link, client-mediated (every step
comes back to the client between servers) and pushed (each server passes it to the next), next to a
local run measured in the same run; and the hidden-state round trip to one server reached directly,
through a hole-punched NAT and through a relay, at 0 ms.

Hosts: a bootstrap peer (also the relay) and three servers (0:10, 10:20, 20:30) on the public
segment; a client behind a cone NAT; for the round trips, servers of block 29 behind a cone and a
symmetric NAT. Delay is applied outside Corolla, by the testbed's router, to every packet.

    python bench/wan.py [--tokens 12] [--rtts 0,20,50,100,200] [--probes 40] [--threads 1] [--quant int4]

`--quant int4`: the servers and the local run on 4-bit weights (PyTorch's CPU int4 kernel), so that a
token's compute is closer to what GPU servers give it (push's gain shrinks as compute grows).

Every process of the testbed computes on `--threads` threads (default 1): the hosts stand for separate
machines but share this one's cores, and a server's one-token step with a thread per core waits for
the core another process holds (on a loaded 2-core machine, 10 blocks of the default model took
20-28 ms on one thread and 29-33 ms on two, 80-93 ms on two with OpenMP's default busy waiting).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from swarm_overhead import local_run_in_child, med_ms, new_decoder  # noqa: E402

from corolla.core.model import ModelInfo, resolve_model  # noqa: E402
from corolla.p2p.client import SwarmClient, open_client_peer, open_stream  # noqa: E402
from corolla.p2p.errors import PeerUnavailableError  # noqa: E402
from corolla.p2p.nat import describe_path, wait_for_punches  # noqa: E402
from corolla.p2p.records import INFERENCE_PROTOCOL  # noqa: E402
from corolla.p2p.session import InferenceSession  # noqa: E402
from corolla.p2p.wire import StreamGone, encode, read_message, write_message  # noqa: E402
from tests import netlab  # noqa: E402
from tests.netlab.swarm import LabSwarm  # noqa: E402

PROBE_BLOCK = 29


async def swarm_tokens(path: Path, tokens: int, bootstrap: str, push: bool) -> dict:
    """Seconds per decoded token through the swarm (prefill excluded), from the client's host, with
    steps pushed from server to server or carried by the client."""
    model = ModelInfo.load(path)
    decoder = new_decoder(path, tokens)
    async with open_client_peer([bootstrap]) as peer:
        client = SwarmClient(peer, model.name, model.hash, model.num_blocks)
        async with InferenceSession(client, decoder.max_length, push=push) as session:
            hidden = decoder.advance(await session.forward(decoder.start()))
            times = []
            while hidden is not None:
                t0 = time.perf_counter()
                hidden = decoder.advance(await session.forward(hidden))
                times.append(time.perf_counter() - t0)
            return {"times": times, "text": decoder.text, "hops": len(session.route),
                    "pushed": session.pushed_steps, "steps": len(times) + 1}


async def both_ways(path: Path, tokens: int, bootstrap: str) -> dict:
    """Client-mediated and pushed runs, twice each, alternating (the machine's load drifts): the
    faster of each pair of runs by median."""
    await swarm_tokens(path, 2, bootstrap, True)  # connections and caches warm
    runs: dict[str, list[dict]] = {"client": [], "push": []}
    for _ in range(2):
        for way in runs:
            runs[way].append(await swarm_tokens(path, tokens, bootstrap, way == "push"))
    return {way: min(rs, key=lambda r: med_ms(r["times"])) for way, rs in runs.items()}


PROBE_ERRORS = (PeerUnavailableError, StreamGone, trio.TooSlowError, KeyError)


class Probe:
    """One-token steps through block 29 of one server, on one inference stream."""

    def __init__(self, peer, pid: str, steps: int) -> None:
        self.peer, self.pid, self.steps = peer, pid, steps
        self.stream, self.session = None, ""
        self.times: list[float] = []
        self.error, self.attempts = "", 0

    async def open(self) -> bool:
        """Open the stream and the session; three attempts (on a busy machine a relayed stream
        sometimes drops)."""
        while self.attempts < 3:
            self.attempts += 1
            try:
                self.stream = await open_stream(self.peer, self.pid, INFERENCE_PROTOCOL, 10.0)
                await write_message(self.stream, encode({"type": "open", "max_length": self.steps + 8,
                                                         "batch_size": 1, "start": PROBE_BLOCK,
                                                         "end": PROBE_BLOCK + 1}), timeout=10)
                header, _ = await read_message(self.stream, idle_timeout=10, body_timeout=10)
                self.session = header["session"]
                return True
            except PROBE_ERRORS as exc:
                self.error = f"{type(exc).__name__}: {exc}"[:200]
        return False

    async def step(self, hidden: torch.Tensor) -> None:
        t0 = time.perf_counter()
        await write_message(self.stream, encode({"type": "step", "session": self.session}, [hidden]), timeout=10)
        await read_message(self.stream, idle_timeout=10, body_timeout=10)
        self.times.append(time.perf_counter() - t0)

    async def close(self) -> None:
        if self.stream is not None:
            with trio.move_on_after(1):
                await self.stream.close()


async def round_trips(path: Path, bootstrap: str, peers: list[str], probes: int) -> dict:
    """Median ms of one decode step (one token's hidden state through block 29) per peer, each on one
    inference stream, after hole punching had its chance; and how each peer was reached. The peers
    take turns step by step, so that all see the same load of this shared machine."""
    model = ModelInfo.load(path)
    hidden = torch.zeros(1, 1, model.hidden_size)
    out = {}
    async with open_client_peer([bootstrap]) as peer:
        client = SwarmClient(peer, model.name, model.hash, model.num_blocks)
        infos = {s.peer_id: s for s in await client.servers(fresh=True)}
        await wait_for_punches(peer.host, peers, 10.0)
        running = [Probe(peer, pid, probes) for pid in peers]
        failed = [p for p in running if not await p.open()]
        running = [p for p in running if p not in failed]
        try:
            for _ in range(probes):
                for p in list(running):
                    try:
                        await p.step(hidden)
                    except PROBE_ERRORS as exc:
                        p.error = f"{type(exc).__name__}: {exc}"[:200]
                        running.remove(p)
                        failed.append(p)
        finally:
            for p in running:
                await p.close()
        for p in failed:
            out[p.pid] = {"ms": float("nan"), "path": f"failed: {p.error}"}
        for p in running:
            reach = infos[p.pid].reachability if p.pid in infos else "unknown"
            out[p.pid] = {"ms": med_ms(p.times[probes // 4:]), "path": describe_path(peer.host, p.pid, reach),
                          "attempts": p.attempts}
    return out


def on_client(lab: netlab.Lab, *args: str) -> dict:
    """Run this file's inner mode on the client's host; its last stdout line is JSON."""
    r = lab.run("client", [sys.executable, __file__, *args], env=os.environ, timeout=900,
                cwd=Path(__file__).resolve().parents[1])
    if r.returncode != 0:
        raise SystemExit(f"client run failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--tokens", type=int, default=12)
    p.add_argument("--rtts", default="0,20,50,100,200")
    p.add_argument("--probes", type=int, default=40)
    p.add_argument("--quant", default="none", choices=["none", "int4"],
                   help="the servers' and the local run's weights (int4: PyTorch's CPU int4 kernel)")
    p.add_argument("--threads", type=int, default=1,
                   help="compute threads of every process (servers, client, local run); 0: torch's default")
    p.add_argument("--inner", choices=["tokens", "rtt"], help=argparse.SUPPRESS)
    p.add_argument("--bootstrap", help=argparse.SUPPRESS)
    p.add_argument("--peers", help=argparse.SUPPRESS)
    args = p.parse_args()
    path = resolve_model(args.model)
    if args.inner == "tokens":
        print(json.dumps(trio.run(both_ways, path, args.tokens, args.bootstrap)))
        return 0
    if args.inner == "rtt":
        print(json.dumps(trio.run(round_trips, path, args.bootstrap, args.peers.split(","), args.probes)))
        return 0
    why = netlab.missing()
    if why:
        print(f"bench/wan.py: {why}", file=sys.stderr)
        return 2
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # every process here shares the cores
    if args.threads > 0:  # inherited by every process started from here (servers, client, local run)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    H = netlab.Host
    topo = netlab.Topology([H("boot"), H("s1"), H("s2"), H("s3"), H("client", "cone"), H("cone", "cone"),
                            H("sym", "symmetric")])
    rows, probes, failed = [], {}, []
    with tempfile.TemporaryDirectory() as tmp, netlab.Lab(topo, prefix="clbench") as lab, \
            LabSwarm(lab, Path(tmp)) as swarm:
        swarm.start_bootstrap("boot")
        for host, blocks in (("s1", "0:10"), ("s2", "10:20"), ("s3", "20:30"), ("cone", "29:30"),
                             ("sym", "29:30")):
            swarm.start_server(host, "--blocks", blocks, "--quant", args.quant, name=host)
        for server in swarm.servers:
            server.peer_id = server.wait_for(r"serving blocks? .* as (\S+);").group(1)
        by_name = {s.name: s for s in swarm.servers}
        probe_peers = [by_name[n].peer_id for n in ("s3", "cone", "sym")]
        probes = on_client(lab, "--inner", "rtt", "--bootstrap", swarm.bootstrap_addr,
                           "--peers", ",".join(probe_peers), "--probes", str(args.probes))
        for name in ("cone", "sym"):  # keep them out of the three-server route
            by_name[name].stop()
        for rtt in [float(x) for x in args.rtts.split(",")]:
            lab.set_rtt(rtt)
            local_times, local_text = local_run_in_child(args.model, args.tokens, args.quant)
            try:
                s = on_client(lab, "--inner", "tokens", "--bootstrap", swarm.bootstrap_addr,
                              "--tokens", str(args.tokens))
            except SystemExit as exc:  # one failed round trip must not lose the others
                print(f"rtt {rtt:g} ms: {exc}", file=sys.stderr)
                failed.append(rtt)
                continue
            load = os.getloadavg()[0]
            rows.append({"rtt": rtt, "local": med_ms(local_times), "load": load, "hops": s["push"]["hops"],
                         **{way: med_ms(s[way]["times"]) for way in ("client", "push")},
                         "pushed": f"{s['push']['pushed']}/{s['push']['steps']}",
                         "same": s["client"]["text"] == local_text == s["push"]["text"]})
    names = {by_name[n].peer_id: n for n in ("s3", "cone", "sym")}
    print(f"model {ModelInfo.load(path).name}, {args.tokens} greedy tokens per run, three servers "
          f"(0:10, 10:20, 20:30), client behind a cone NAT, {args.threads or 'default'} compute thread(s) "
          f"per process, weights {'float32' if args.quant == 'none' else args.quant}; median ms per token")
    print(f"{'rtt ms':>6} {'local':>7} {'client-med':>10} {'push':>7} {'tok/s local':>11} {'tok/s c-m':>9} "
          f"{'tok/s push':>10} {'push/c-m':>8} {'saved':>6} {'of':>5} {'pushed':>6} {'same text':>9} {'load':>5}")
    for r in rows:
        # a k-server route crosses 2k links client-mediated and k+1 pushed: (k-1) one-way delays saved
        ideal = (r["hops"] - 1) * r["rtt"] / 2
        print(f"{r['rtt']:>6.0f} {r['local']:7.1f} {r['client']:10.1f} {r['push']:7.1f} {1000 / r['local']:11.1f} "
              f"{1000 / r['client']:9.2f} {1000 / r['push']:10.2f} {r['client'] / r['push']:8.2f} "
              f"{r['client'] - r['push']:6.0f} {ideal:5.0f} {r['pushed']:>6} {r['same']!s:>9} {r['load']:5.1f}")
    for rtt in failed:
        print(f"{rtt:>6.0f}  failed (see stderr)")
    print("(push/c-m = push tokens/s / client-mediated tokens/s; per token the network floor is 2 x hops "
          "one-way delays client-mediated, hops + 1 pushed; saved = ms per token push saved, of = the "
          "(hops - 1) one-way delays it should; pushed = steps that went server to server all the way; "
          "load = 1-minute load average of this machine)")
    print()
    print(f"hidden-state round trip at 0 ms rtt (one token through block {PROBE_BLOCK}, median of the "
          f"last {args.probes - args.probes // 4} of {args.probes} steps on one stream per server, the "
          f"servers taking turns step by step)")
    direct = next(v["ms"] for pid, v in probes.items() if names[pid] == "s3")
    for pid, v in probes.items():
        print(f"  {names[pid]:<5} {v['path']:<22} {v['ms']:7.2f} ms   {v['ms'] / direct:5.2f}x direct")
    return 0 if all(r["same"] for r in rows) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
