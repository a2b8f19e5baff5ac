"""Batched steps over several sessions and cache rollback, for every family."""

from __future__ import annotations

import pytest
import torch

from corolla.core.errors import SessionTooLongError, ShapeError
from corolla.core.span import Span, SpanRuntime
from tests.models import FAMILIES


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    # a batch of rows reorders no sums within a row, but matmul kernels may tile differently
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


@pytest.fixture(scope="module", params=FAMILIES)
def runtime(request, tiny_models):
    return SpanRuntime(Span.load(tiny_models[request.param], 1, 5), max_cache_tokens=1024)


def _inputs(seed: int, prompt: int, steps: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [torch.randn(1, prompt, 64)] + [torch.randn(1, 1, 64) for _ in range(steps)]


def test_batched_sessions_each_equal_their_solo_run(runtime):
    # three sessions with different prompt lengths, then decoding steps run as one batch
    inputs = {f"s{i}": _inputs(10 + i, prompt, 5) for i, prompt in enumerate((3, 7, 12))}
    solo = {}
    for sid, xs in inputs.items():
        runtime.open_session(sid, 32)
        solo[sid] = [runtime.forward(sid, x) for x in xs]
        runtime.close_session(sid)
    for sid, xs in inputs.items():
        runtime.open_session(sid, 32)
        close(runtime.forward(sid, xs[0]), solo[sid][0])
    for step in range(1, 6):
        outs = runtime.forward_many([(sid, xs[step], None) for sid, xs in inputs.items()])
        for sid, out in zip(inputs, outs):
            assert out.shape == (1, 1, 64)
            close(out, solo[sid][step])
    for sid in inputs:
        assert runtime.session_length(sid) == len(inputs[sid][0][0]) + 5
        runtime.close_session(sid)


def test_batched_prefill_beside_a_running_session(runtime):
    # one session starts (empty cache) while another is mid-conversation: same step width
    a, b = _inputs(20, 5, 2), _inputs(21, 2, 0)
    runtime.open_session("alone", 16)
    want = [runtime.forward("alone", x) for x in a] + [None]
    runtime.close_session("alone")
    runtime.open_session("alone", 16)
    want_b = runtime.forward("alone", b[0])
    runtime.close_session("alone")
    runtime.open_session("a", 16)
    runtime.open_session("b", 16)
    runtime.forward("a", a[0])
    runtime.forward("a", a[1])
    # a's next two tokens and b's two-token prompt in one pass
    two = torch.cat([a[2], a[2]], dim=1)
    runtime.open_session("a2", 16)
    runtime.forward("a2", a[0])
    runtime.forward("a2", a[1])
    want_two = runtime.forward("a2", two)
    got_a, got_b = runtime.forward_many([("a", two, None), ("b", b[0], None)])
    close(got_a, want_two)
    close(got_b, want_b)
    assert want[0] is not None
    for sid in ("a", "b", "a2"):
        runtime.close_session(sid)


def test_rollback_continues_exactly(runtime):
    xs = _inputs(30, 6, 4)
    guesses = torch.randn(1, 3, 64)
    runtime.open_session("clean", 32)
    runtime.open_session("rolled", 32)
    runtime.forward("clean", xs[0])
    runtime.forward("rolled", xs[0])
    runtime.forward("rolled", guesses)  # three guessed tokens, all rejected
    assert runtime.session_length("rolled") == 9
    for k, x in enumerate(xs[1:]):
        want = runtime.forward("clean", x)
        start = 6 + k if k == 0 else None  # the first step after the guesses says where it starts
        got = runtime.forward("rolled", x, start=start)
        close(got, want)
    assert runtime.session_length("rolled") == runtime.session_length("clean") == 10
    runtime.truncate("rolled", 8)
    close(runtime.forward("rolled", xs[3]), runtime.forward("clean", xs[3], start=8))
    for sid in ("clean", "rolled"):
        runtime.close_session(sid)


def test_bad_batches_and_starts_are_refused(runtime):
    runtime.open_session("x", 8)
    runtime.open_session("y", 8)
    runtime.forward("x", torch.randn(1, 2, 64))
    with pytest.raises(ShapeError, match="cannot start"):
        runtime.forward("x", torch.randn(1, 1, 64), start=5)
    with pytest.raises(ShapeError, match="same number of new tokens"):
        runtime.forward_many([("x", torch.randn(1, 1, 64), None), ("y", torch.randn(1, 2, 64), None)])
    with pytest.raises(ShapeError, match="each session once"):
        runtime.forward_many([("x", torch.randn(1, 1, 64), None), ("x", torch.randn(1, 1, 64), None)])
    with pytest.raises(SessionTooLongError):
        runtime.forward_many([("x", torch.randn(1, 7, 64), None), ("y", torch.randn(1, 7, 64), None)])
    assert runtime.session_length("x") == 2 and runtime.session_length("y") == 0  # nothing was run
    for sid in ("x", "y"):
        runtime.close_session(sid)
