"""Concurrent sessions' steps share forward passes on a server; rolled-back steps over the swarm."""

from __future__ import annotations

import time

import torch
import trio

from corolla.core.chain import LocalChain
from corolla.core.errors import SessionTooLongError
from corolla.core.model import ModelInfo
from corolla.core.span import Span, SpanRuntime
from corolla.p2p.batching import StepBatcher
from corolla.p2p.session import InferenceSession
from tests.p2p.test_swarm_inprocess import TinySwarm, run_with_swarm


def _inputs(seed: int, prompt: int, steps: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [torch.randn(1, prompt, 64)] + [torch.randn(1, 1, 64) for _ in range(steps)]


def _solo(path, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    chain = LocalChain.load(path, [(0, ModelInfo.load(path).num_blocks)])
    chain.open(64)
    return [chain.forward(x) for x in xs]


def test_concurrent_sessions_share_passes_and_each_equals_its_solo_run(tiny_model):
    sessions = {i: _inputs(40 + i, prompt, 8) for i, prompt in enumerate((2, 5, 9, 3))}
    nodes = {}

    async def body(swarm: TinySwarm):
        nodes["front"] = await swarm.add("front", 0, 3)
        nodes["back"] = await swarm.add("back", 3, 6)
        outs: dict[int, list[torch.Tensor]] = {}

        async def one(i: int, client) -> None:
            async with InferenceSession(client, 64) as session:
                outs[i] = [await session.forward(x) for x in sessions[i]]

        async with swarm.client() as client, trio.open_nursery() as nursery:
            for i in sessions:
                nursery.start_soon(one, i, client)
        return outs

    outs = run_with_swarm(tiny_model, body)
    for i, xs in sessions.items():
        for got, want in zip(outs[i], _solo(tiny_model, xs), strict=True):
            # a batched pass sums in another order than a solo one: float32 rounding, not a neighbour's rows
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    for node in nodes.values():
        # 4 sessions x 9 steps: some of them ran together (a step that timed out on a loaded machine is
        # sent again, so a few more may be counted)
        assert 36 <= node.batcher.steps <= 40
        assert node.batcher.batches < node.batcher.steps


def test_a_step_that_starts_earlier_rolls_back_every_server(tiny_model):
    xs = _inputs(50, 5, 3)
    guesses = torch.randn(1, 4, 64)

    async def body(swarm: TinySwarm):
        await swarm.add("front", 0, 2)
        await swarm.add("back", 2, 6)
        async with swarm.client() as client, InferenceSession(client, 64) as session:
            outs = [await session.forward(xs[0])]
            await session.forward(guesses)  # four guesses, all wrong
            outs.append(await session.forward(xs[1], start=5))
            outs += [await session.forward(x) for x in xs[2:]]
            return outs, session.position, [sum(t.shape[1] for t in h) for h in session.history.values()]

    outs, position, kept = run_with_swarm(tiny_model, body)
    for got, want in zip(outs, _solo(tiny_model, xs), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert position == 8 and kept == [8, 8]  # the inputs kept for replay lost the guesses too


def test_a_bad_step_in_a_batch_costs_only_its_session(tiny_model):
    rt = SpanRuntime(Span.load(tiny_model, 0, 3), max_cache_tokens=256)
    for sid, max_length in (("a", 16), ("b", 16), ("short", 2)):
        rt.open_session(sid, max_length)
        rt.forward(sid, torch.randn(1, 2, 64))
    results: dict[str, object] = {}

    async def main():
        batcher = StepBatcher(trio.Lock(), window=0.05)

        async def step(sid: str) -> None:
            try:
                results[sid] = await batcher.forward(rt, sid, torch.randn(1, 1, 64))
            except SessionTooLongError as exc:
                results[sid] = exc

        async with trio.open_nursery() as nursery:
            for sid in ("a", "b", "short"):
                batcher._last_step[sid] = (time.monotonic(), (id(rt), 1))  # all three decoding just now
                nursery.start_soon(step, sid)

    trio.run(main)
    assert isinstance(results["short"], SessionTooLongError)
    for sid in ("a", "b"):
        out, _, shared = results[sid]
        assert out.shape == (1, 1, 64) and shared == 3
        assert rt.session_length(sid) == 3
    assert rt.session_length("short") == 2
