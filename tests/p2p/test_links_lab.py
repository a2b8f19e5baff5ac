"""Servers measure their links under real delay and bandwidth (the WAN testbed: every packet pays its
access links' one-way delays, and one server's upload is held to 2 Mbit/s by `tc tbf`), and routing
with push takes the chain whose links are short for a one-token step, and keeps a long prompt off
the slow link."""

from __future__ import annotations

import json
import sys

import pytest

from tests import netlab
from tests.netlab.swarm import REPO, LabSwarm

pytestmark = [pytest.mark.slow, pytest.mark.skipif(netlab.missing() is not None, reason=netlab.missing() or "")]

SLOW_MBIT = 2.0
LONG_PROMPT = 1000  # tokens: 256 KB of hidden states (64 x float32 each), a second at 2 Mbit/s

LOOK = """
import json, sys, trio
from corolla.core.model import ModelInfo
from corolla.p2p.client import SwarmClient, open_client_peer
from corolla.p2p.routing import plan_route

async def main(path, boot, long_prompt):
    info = ModelInfo.load(path)
    async with open_client_peer([boot]) as peer:
        client = SwarmClient(peer, info.name, info.hash, info.num_blocks)
        for _ in range(150):  # until both first servers have measured both next servers
            servers = await client.servers(fresh=True, rediscover=True)
            first = [s for s in servers if s.start == 0]
            if len(servers) == 4 and all(len(s.next_rtt_ms) == len(s.next_mbps) == 2 for s in first):
                break
            await trio.sleep(1)
        routes = {n: plan_route(servers, 0, info.num_blocks, cache_tokens=16, push=True, tokens=n)
                  for n in (1, long_prompt)}
        print(json.dumps({"servers": {s.peer_id: {"rtt": s.rtt_ms, "links": s.next_rtt_ms, "mbps": s.next_mbps}
                                      for s in servers},
                          "routes": {n: [h.peer_id for h in r] for n, r in routes.items()}}))

trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


def test_servers_measure_their_links_and_routing_takes_the_short_and_fast_ones(tiny_model, tmp_path):
    H = netlab.Host
    # two servers of blocks 0:3: `slow` next to everyone but with a 2 Mbit/s upload, `a` 15 ms out
    topo = netlab.Topology([H("boot", delay_ms=1), H("a", delay_ms=15), H("slow", delay_ms=1, rate_mbit=SLOW_MBIT),
                            H("near", delay_ms=1), H("far", delay_ms=20), H("client", delay_ms=1)])
    with netlab.Lab(topo, prefix="cllinks") as lab, LabSwarm(lab, tmp_path, announce_period=2.0) as swarm:
        swarm.start_bootstrap("boot")
        for host, blocks in (("a", "0:3"), ("slow", "0:3"), ("near", "3:6"), ("far", "3:6")):
            swarm.start_server(host, "--model", str(tiny_model), "--blocks", blocks, name=host)
        ids = {s.name: s.wait_for(r"serving blocks? .* as (\S+);").group(1) for s in swarm.servers}
        r = lab.run("client", [sys.executable, "-c", LOOK, str(tiny_model), swarm.bootstrap_addr, str(LONG_PROMPT)],
                    cwd=REPO, timeout=400)
        assert r.returncode == 0, r.stderr[-3000:]
        seen = json.loads(r.stdout.strip().splitlines()[-1])
        for name in ("a", "slow"):
            s = seen["servers"][ids[name]]
            print(f"{name}'s links: near {s['links'][ids['near']]} ms {s['mbps'][ids['near']]} Mbit/s, "
                  f"far {s['links'][ids['far']]} ms {s['mbps'][ids['far']]} Mbit/s")
        a, slow = seen["servers"][ids["a"]], seen["servers"][ids["slow"]]
        # a round trip pays each access link twice: a-near 2 x (15 + 1) ms, a-far 2 x (15 + 20) ms (on top:
        # however long a busy machine makes the processes wait, so no upper bound; slow's round trips
        # also wait behind whatever its 2 Mbit/s upload is sending then)
        assert 32 <= a["links"][ids["near"]] < a["links"][ids["far"]] and a["links"][ids["far"]] >= 70, a
        assert slow["links"][ids["near"]] >= 4 and slow["links"][ids["far"]] >= 42, slow
        # slow's upload is held to 2 Mbit/s (a probe beats it by the tbf's 32 KB burst at most); a's is not
        assert max(slow["mbps"].values()) <= 1.25 * SLOW_MBIT < 2 * SLOW_MBIT < min(a["mbps"].values()), (a, slow)
        # one token: the nearest chain (28 ms less of round trips); a long prompt: off slow's upload,
        # through a, still to near
        assert seen["routes"]["1"] == [ids["slow"], ids["near"]]
        assert seen["routes"][str(LONG_PROMPT)] == [ids["a"], ids["near"]]
