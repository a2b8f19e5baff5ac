"""One-token steps with static shapes (core/step_graph.py) against the dynamic path, on the CPU:
the same arithmetic a CUDA graph replays, without the capture."""

from __future__ import annotations

import pytest
import torch

from corolla.core.span import Span, SpanRuntime
from tests.models import FAMILIES


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    # attention over the whole buffer under a mask sums the same terms plus exact zeros
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


@pytest.fixture(scope="module", params=FAMILIES)
def span(request, tiny_models):
    return Span.load(tiny_models[request.param], 1, 5)


def test_static_steps_equal_dynamic_steps_through_rollback_and_batches(span):
    dynamic, static = SpanRuntime(span, 1024, static_steps=False), SpanRuntime(span, 1024, static_steps=True)
    torch.manual_seed(3)
    prompt, steps, guesses = torch.randn(1, 5, 64), [torch.randn(1, 1, 64) for _ in range(6)], torch.randn(1, 3, 64)
    other = torch.randn(1, 4, 64)
    for rt in (dynamic, static):
        rt.open_session("s", 24)
        rt.open_session("t", 24)
    close(static.forward("s", prompt), dynamic.forward("s", prompt))
    for rt in (dynamic, static):
        rt.forward("t", other)
    for k, x in enumerate(steps):
        if k == 2:  # three rejected guesses, then the next step starts where they began
            for rt in (dynamic, static):
                rt.forward("s", guesses)
            close(static.forward("s", x, start=7), dynamic.forward("s", x, start=7))
        elif k in (3, 4):  # batched steps beside another session read and extend the same caches
            # (the second one takes the static batched path: a set of sessions is made static at its second step)
            want = dynamic.forward_many([("s", x, None), ("t", x, None)])
            got = static.forward_many([("s", x, None), ("t", x, None)])
            for g, w in zip(got, want):
                close(g, w)
        else:
            close(static.forward("s", x), dynamic.forward("s", x))
    assert static.session_length("s") == dynamic.session_length("s") == 11
    rotary = span.family.name != "BLOOM"  # BLOOM stays dynamic
    assert static._sessions["s"].pooled == rotary
    # one pass of 1 row and one of 2 rows (padded sizes), both reading 64 cache positions
    assert static._passes is None if not rotary else set(static._passes._passes) == {(1, 64), (2, 64)}
    for rt in (dynamic, static):
        rt.close_session("s")
        rt.close_session("t")
