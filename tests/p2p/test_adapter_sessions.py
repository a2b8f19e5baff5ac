"""Adapter sessions over real libp2p hosts in one process: routed only through servers offering the
adapter, spot-checked by such servers with the adapter applied, and refused by a server without it."""

from __future__ import annotations

import pytest
import torch

from corolla.core.adapters import load_adapter
from corolla.core.span import Span, SpanRuntime
from corolla.p2p.client import request_info
from corolla.p2p.errors import AdapterNotOfferedError
from corolla.p2p.routing import RouteHop
from corolla.p2p.session import HopFailure, HopSession, InferenceSession
from corolla.p2p.spotcheck import SpotCheck
from tests.adapters import make_lora
from tests.p2p.test_swarm_inprocess import TinySwarm, inputs_for, run_with_swarm


@pytest.fixture(scope="module")
def adapter_dir(tiny_model, tmp_path_factory):
    return make_lora(tiny_model, tmp_path_factory.mktemp("lora") / "greeter", seed=3)


def with_adapter(span: Span, adapter_dir) -> Span:
    load_adapter(span, adapter_dir)
    return span


def test_an_adapter_session_uses_only_servers_offering_it_and_passes_spot_checks(tiny_model, adapter_dir):
    xs = inputs_for(4)

    async def body(swarm: TinySwarm):
        plain = await swarm.add("plain", 0, 6)
        plain.block_ms = 1e-4  # the cheapest route by far, were it allowed
        for name, (a, b) in {"front": (0, 3), "back": (3, 6), "checker": (0, 6)}.items():
            node = await swarm.add(name, a, b)
            with_adapter(node.span, adapter_dir)
            if name == "checker":
                node.block_ms = 100.0  # the route takes front and back; this one checks them
        async with swarm.client() as client:
            checks = SpotCheck(rate=1.0)
            async with InferenceSession(client, 64, adapter="greeter", spot_check=checks) as session:
                outs = [await session.forward(x) for x in xs]
                checked = await session.checked(final=True)  # waits for the checks running beside the steps
                used = {h.peer_id for h in session.route}
            async with InferenceSession(client, 64) as base:
                base_route = {h.peer_id for h in base.route}
            with pytest.raises(AdapterNotOfferedError, match="adapters offered: greeter"):
                async with InferenceSession(client, 64, adapter="nope"):
                    pass
            refused = None
            try:  # a server asked directly for an adapter it lacks refuses the session
                info = await request_info(client.peer, plain.peer_id, timeout=30.0)  # asked directly
                await HopSession.open(client, RouteHop(info, 0, 6), 16, 5.0, adapter="greeter")
            except HopFailure as failure:
                refused = failure
        return outs, used, base_route, plain.peer_id, checks, refused, checked

    outs, used, base_route, plain_id, checks, refused, checked = run_with_swarm(tiny_model, body)
    assert plain_id not in used and plain_id in base_route and len(used) == 2
    # every output of both hops was checked, and every check agreed: the checker applied the adapter
    assert checked == sum(x.shape[1] for x in xs)
    records = [checks.reputation.peers[pid] for pid in used]
    assert all(r.checks >= 1 and r.failures == 0 for r in records)
    assert refused is not None and "UnknownAdapterError" in refused.reason and refused.full
    runtime = SpanRuntime(with_adapter(Span.load(tiny_model, 0, 6), adapter_dir))
    runtime.open_session("s", 64, adapter="greeter")
    for got, x in zip(outs, xs, strict=True):
        torch.testing.assert_close(got, runtime.forward("s", x), rtol=1e-4, atol=1e-4)
