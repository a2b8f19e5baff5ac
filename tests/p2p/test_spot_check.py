"""Spot-checks against a server that returns wrong activations beside honest ones (real libp2p hosts
in one process, tiny random Llama): a liar is caught, banned, and the step redone with honest output."""

from __future__ import annotations

import pytest
import torch

from corolla.p2p.client import PeerBans
from corolla.p2p.reputation import Reputation
from corolla.p2p.server import ServerNode
from corolla.p2p.session import InferenceSession
from corolla.p2p.spotcheck import LiarCaught, SpotCheck, agree, relative_error
from tests.p2p.test_swarm_inprocess import inputs_for, reference, run_with_swarm

LIES = {
    "random": lambda out: torch.randn_like(out) * out.std(),
    "zero": torch.zeros_like,
    "scaled": lambda out: out * 1.02,
}


def make_liar(node: ServerNode, lie, honest_steps: int) -> None:
    """Make `node` answer session steps honestly `honest_steps` times per session, then lie; it lies
    on every forward request (as a checker). It also claims to be the fastest server."""
    run, step, steps = node._run, node.batcher.forward, {}

    async def lying_step(runtime, session_id, hidden, start=None):  # a session's step (batched)
        out, seconds, batch = await step(runtime, session_id, hidden, start)
        steps[session_id] = steps.get(session_id, 0) + 1
        return (out if steps[session_id] <= honest_steps else lie(out)), seconds, batch

    async def lying(fn, *args):  # a forward request: what a checker answers
        return lie(await run(fn, *args))

    node.batcher.forward = lying_step
    node._run = lying
    node.observe = lambda *a: None
    node.block_ms = 0.001


@pytest.mark.parametrize("mode", sorted(LIES))
def test_a_liar_from_the_first_step_is_caught_and_the_output_is_honest(tiny_model, mode):
    xs = inputs_for(6)
    caught: list[LiarCaught] = []

    async def body(swarm):
        liar = await swarm.add("liar", 0, 6)
        make_liar(liar, LIES[mode], honest_steps=0)
        await swarm.add("a", 0, 6)
        await swarm.add("b", 0, 6)
        async with swarm.client() as client:
            checks = SpotCheck(rate=0.05, seed=1, on_caught=caught.append)
            async with InferenceSession(client, 64, spot_check=checks) as session:
                assert session.route[0].peer_id == liar.peer_id  # it claims to be fastest
                outs = [await session.forward(x) for x in xs]
                return outs, liar.peer_id, client.bans.banned(liar.peer_id), client.reputation.distrusted(liar.peer_id)

    outs, liar_id, banned, distrusted = run_with_swarm(tiny_model, body)
    assert [c.peer_id for c in caught] == [liar_id] and banned and distrusted
    for got, want in zip(outs, reference(tiny_model, xs), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_liar_that_starts_lying_later_is_caught_in_99_percent_of_runs(tiny_model):
    """rate 0.2: P(no check in 37 lying steps) = 0.8^37 = 0.03 %."""
    runs, steps, rate = 100, 40, 0.2
    xs = inputs_for(steps, prompt=3)
    caught_at: list[int | None] = []

    async def body(swarm):
        liar = await swarm.add("liar", 0, 6)
        make_liar(liar, LIES["scaled"], honest_steps=3)
        await swarm.add("a", 0, 6)
        await swarm.add("b", 0, 6)
        async with swarm.client() as client:
            for run in range(runs):
                client.bans, client.reputation, client._observed_ms = PeerBans(), Reputation(), {}
                await client.servers(fresh=True)
                found: list[int] = []
                checks = SpotCheck(rate=rate, seed=run, on_caught=lambda c, found=found: found.append(len(done)))
                done: list = []
                async with InferenceSession(client, 64, spot_check=checks) as session:
                    assert session.route[0].peer_id == liar.peer_id
                    for x in xs[:steps]:
                        done.append(await session.forward(x))
                        if found:
                            break
                caught_at.append(found[0] if found else None)

    run_with_swarm(tiny_model, body)
    caught = sum(at is not None for at in caught_at)
    print(f"caught in {caught}/{runs} runs; at steps {sorted(a for a in caught_at if a is not None)}")
    assert caught >= 99


def test_tolerance_tells_rounding_from_lies():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 64) * 50
    assert agree(x, x + 1e-5 * torch.randn_like(x), "float32", "float32")
    assert not agree(x, x * 1.01, "float32", "float32")
    assert agree(x, x.bfloat16().float(), "bfloat16", "float32")  # bf16 rounding is not a lie
    assert not agree(x, torch.zeros_like(x), "bfloat16", "bfloat16")
    assert relative_error(x, x) == 0.0


def test_a_server_claiming_to_be_faster_than_it_is_is_routed_by_what_it_does(tiny_model):
    xs = inputs_for(4)

    async def body(swarm):
        braggart = await swarm.add("braggart", 0, 6)
        braggart.observe = lambda *a: None
        braggart.block_ms = 0.0001
        step = braggart.batcher.forward

        async def slow(*args):
            import trio

            await trio.sleep(0.05)  # 50 ms a step, ~8 ms a block: far from the 0.0001 it claims
            return await step(*args)

        braggart.batcher.forward = slow
        await swarm.add("honest", 0, 6)
        async with swarm.client() as client:
            async with InferenceSession(client, 64) as session:
                first = session.route[0].peer_id
                for x in xs:
                    await session.forward(x)
            seen = {s.peer_id: s.block_ms for s in await client.servers(fresh=True)}
            async with InferenceSession(client, 64) as session:
                second = session.route[0].peer_id
            return braggart.peer_id, first, second, seen

    braggart, first, second, seen = run_with_swarm(tiny_model, body)
    assert first == braggart and second != braggart
    assert seen[braggart] > 1.0
