"""Pooled one-token steps (core/kv_pool.py) on the CPU, uncaptured: any set of sessions, as it
changes, takes the passes made for padded sizes, and every session's output is its own."""

from __future__ import annotations

import pytest
import torch

from corolla.core.span import Span, SpanRuntime
from tests.models import FAMILIES


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


@pytest.fixture(scope="module", params=[f for f in FAMILIES if f != "bloom"])  # BLOOM has no static steps
def span(request, tiny_models):
    return Span.load(tiny_models[request.param], 0, 3)


def _open(runtimes, sid: str, prompt: torch.Tensor, max_length: int = 40) -> None:
    outs = []
    for rt in runtimes:
        rt.open_session(sid, max_length)
        outs.append(rt.forward(sid, prompt))
    close(outs[1], outs[0])


def _step(dynamic: SpanRuntime, static: SpanRuntime, ids: list[str], seed: int) -> None:
    torch.manual_seed(seed)
    steps = [(sid, torch.randn(1, 1, 64), None) for sid in ids]
    want, got = dynamic.forward_many(steps), static.forward_many(steps)
    for g, w in zip(got, want):
        close(g, w)


def test_changing_sets_of_sessions_reuse_the_padded_passes(span):
    dynamic, static = SpanRuntime(span, 4096, static_steps=False), SpanRuntime(span, 4096, static_steps=True)
    torch.manual_seed(0)
    for i, sid in enumerate("abcde"):
        _open((dynamic, static), sid, torch.randn(1, 2 + 3 * i, 64))
    sets = ["ab", "acd", "bcde", "e", "abcde", "ba", "dc", "abcde"]
    for k, ids in enumerate(sets):
        _step(dynamic, static, list(ids), k)
    made = set(static._passes._passes)
    # a session leaves, another takes its slot with entries of its own: the same passes serve it
    for rt in (dynamic, static):
        rt.close_session("c")
    _open((dynamic, static), "f", torch.randn(1, 5, 64))
    assert static._pool.first_slot("f") == 2  # c's slot, full of c's old entries (masked)
    for k, ids in enumerate(["fa", "bdef", "f"]):
        _step(dynamic, static, list(ids), 100 + k)
    assert set(static._passes._passes) == made == {(1, 64), (2, 64), (4, 64), (8, 64)}
    for sid in "abdef":
        assert static.session_length(sid) == dynamic.session_length(sid)


def test_the_pool_grows_in_place_and_sessions_it_cannot_hold_keep_their_own_buffers(span):
    # 1024 tokens: 16 slots of 64; the pool starts with 8 and doubles once
    dynamic, static = SpanRuntime(span, 1024, static_steps=False), SpanRuntime(span, 1024, static_steps=True)
    torch.manual_seed(1)
    ids = [f"s{i}" for i in range(12)]
    for i, sid in enumerate(ids[:8]):
        _open((dynamic, static), sid, torch.randn(1, 1 + i, 64), max_length=32)
    _step(dynamic, static, ids[:8], 0)
    assert static._pool.capacity == 8
    for i, sid in enumerate(ids[8:]):
        _open((dynamic, static), sid, torch.randn(1, 4 + i, 64), max_length=32)
    assert static._pool.capacity == 16 and static._pool.moves == 2
    _step(dynamic, static, ids, 1)  # 12 rows: a pass of 16, every session's entries moved with it
    _step(dynamic, static, ids[3:5], 2)
    # a long session would need a 256-token room: 16 slots of it exceed the 1024 tokens, so it is
    # served from buffers of its own, and a set that holds it takes the dynamic batched step
    _open((dynamic, static), "long", torch.randn(1, 6, 64), max_length=200)
    assert not static._sessions["long"].pooled and static._sessions["s0"].pooled
    _step(dynamic, static, ["long", "s1", "s2"], 3)
    _step(dynamic, static, ["long"], 4)
    _step(dynamic, static, ["s1", "s2"], 5)
