"""Per-session KV caches: replay, interleaving, limits and typed errors."""

from __future__ import annotations

import pytest
import torch

from corolla.core.errors import (
    CacheFullError,
    DtypeError,
    SessionExistsError,
    SessionTooLongError,
    ShapeError,
    UnknownSessionError,
)
from corolla.core.span import Span, SpanRuntime


@pytest.fixture(scope="module")
def runtime(tiny_models):
    return SpanRuntime(Span.load(tiny_models["llama"], 1, 4), max_cache_tokens=256)


@pytest.fixture(scope="module")
def bloom_runtime(tiny_models):
    return SpanRuntime(Span.load(tiny_models["bloom"], 2, 6), max_cache_tokens=256)


@pytest.mark.parametrize("which", ["runtime", "bloom_runtime"])
def test_replayed_cache_continues_identically(request, which):
    rt = request.getfixturevalue(which)
    torch.manual_seed(1)
    prompt, steps = torch.randn(1, 7, 64), [torch.randn(1, 1, 64) for _ in range(5)]
    rt.open_session("original", 32)
    sent = [prompt]
    rt.forward("original", prompt)
    for x in steps[:3]:
        rt.forward("original", x)
        sent.append(x)
    # a replacement server only has what the client stored
    rt.open_session("replacement", 32)
    rt.replay("replacement", sent)
    assert rt.session_length("replacement") == rt.session_length("original") == 10
    for x in steps[3:]:
        want = rt.forward("original", x)
        # one prefill vs several steps only reorders float sums: equal up to rounding
        torch.testing.assert_close(rt.forward("replacement", x), want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    rt.close_session("original")
    rt.close_session("replacement")


def test_interleaved_sessions_equal_separate_runs(runtime):
    torch.manual_seed(2)
    a = [torch.randn(1, 4, 64)] + [torch.randn(1, 1, 64) for _ in range(4)]
    b = [torch.randn(1, 6, 64)] + [torch.randn(1, 1, 64) for _ in range(4)]

    def alone(inputs, sid):
        runtime.open_session(sid, 16)
        outs = [runtime.forward(sid, x) for x in inputs]
        runtime.close_session(sid)
        return outs

    expected_a, expected_b = alone(a, "a-alone"), alone(b, "b-alone")
    runtime.open_session("a", 16)
    runtime.open_session("b", 16)
    got_a, got_b = [], []
    for xa, xb in zip(a, b):
        got_b.append(runtime.forward("b", xb))
        got_a.append(runtime.forward("a", xa))
    runtime.close_session("a")
    runtime.close_session("b")
    for got, want in zip(got_a + got_b, expected_a + expected_b):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_wrong_hidden_size_is_a_shape_error(runtime):
    runtime.open_session("s-shape", 8)
    with pytest.raises(ShapeError, match="hidden size is 32, this model's is 64"):
        runtime.forward("s-shape", torch.randn(1, 2, 32))
    with pytest.raises(ShapeError, match=r"\[batch, tokens, 64\]"):
        runtime.forward("s-shape", torch.randn(2, 64))
    with pytest.raises(ShapeError, match="opened with batch 1"):
        runtime.forward("s-shape", torch.randn(2, 1, 64))
    assert runtime.session_length("s-shape") == 0  # nothing half-applied
    runtime.close_session("s-shape")


def test_wrong_dtype_is_a_dtype_error(runtime):
    runtime.open_session("s-dtype", 8)
    with pytest.raises(DtypeError, match="int64"):
        runtime.forward("s-dtype", torch.ones(1, 2, 64, dtype=torch.long))
    with pytest.raises(DtypeError, match="float64"):
        runtime.forward("s-dtype", torch.ones(1, 2, 64, dtype=torch.float64))
    out = runtime.forward("s-dtype", torch.ones(1, 2, 64, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16  # accepted float dtypes come back as they were sent
    runtime.close_session("s-dtype")


def test_over_length_is_refused_and_session_survives(runtime):
    runtime.open_session("s-len", 5)
    runtime.forward("s-len", torch.randn(1, 4, 64))
    with pytest.raises(SessionTooLongError, match="would reach 6 tokens, past its maximum length 5"):
        runtime.forward("s-len", torch.randn(1, 2, 64))
    runtime.forward("s-len", torch.randn(1, 1, 64))  # the one token that fits still works
    assert runtime.session_length("s-len") == 5
    runtime.close_session("s-len")


def test_unknown_session_and_duplicates(runtime):
    with pytest.raises(UnknownSessionError, match="'nope' is not open"):
        runtime.forward("nope", torch.randn(1, 1, 64))
    with pytest.raises(UnknownSessionError):
        runtime.close_session("nope")
    runtime.open_session("dup", 4)
    with pytest.raises(SessionExistsError):
        runtime.open_session("dup", 4)
    runtime.close_session("dup")


def test_cache_accounting_refuses_what_it_cannot_hold(runtime):
    free = runtime.free_cache_tokens
    assert free == runtime.max_cache_tokens == 256
    runtime.open_session("big", 200)
    assert runtime.free_cache_tokens == 56
    # llama tiny: 3 blocks x (k+v) x 2 kv heads x 16 dims x 4 bytes per token
    assert runtime.span.kv_bytes_per_token() == 3 * 2 * 2 * 16 * 4
    assert runtime.cache_bytes == 200 * runtime.span.kv_bytes_per_token()
    with pytest.raises(CacheFullError, match="needs 100 cache tokens but only 56"):
        runtime.open_session("too-big", 100)
    runtime.close_session("big")
    assert runtime.free_cache_tokens == 256


def test_span_bounds_are_checked(tiny_models):
    with pytest.raises(ShapeError, match="not a span of this model's 6 blocks"):
        Span.load(tiny_models["llama"], 4, 9)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "bloom"])
def test_sub_span_continues_a_conversation_like_its_own_span(tiny_models, family):
    """A server that runs part of its span (a route with other boundaries) must add several tokens
    at once after a prefix (a chat's next message) exactly as a span loaded for those blocks."""
    path = tiny_models[family]
    part = Span.load(path, 0, 6).sub(3, 5)
    own = Span.load(path, 3, 5)
    torch.manual_seed(3)
    first, second, third = torch.randn(1, 5, 64), torch.randn(1, 3, 64), torch.randn(1, 1, 64)
    outs = []
    for span in (part, own):
        rt = SpanRuntime(span, max_cache_tokens=64)
        rt.open_session("chat", 16)
        outs.append([rt.forward("chat", x) for x in (first, second, third)])
    for got, want in zip(*outs):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # and the same as one prefill over the whole conversation, up to float rounding
    whole = own(torch.cat([first, second, third], dim=1))
    stepped = torch.cat(outs[1], dim=1)
    torch.testing.assert_close(stepped, whole, rtol=1e-4, atol=1e-5 * whole.abs().max().item())


def test_sub_span_outside_the_span_is_refused(runtime):
    with pytest.raises(ShapeError, match="not inside the span 1:4"):
        runtime.span.sub(0, 3)
