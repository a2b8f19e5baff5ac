"""Deep prompts in a cached session: a prefill with the prompts, then one token at a time, gives what
rerunning the whole sequence through the span with the prompts gives, for every family."""

from __future__ import annotations

import pytest
import torch

from corolla.core.errors import ShapeError
from corolla.core.span import Span, SpanRuntime
from corolla.core.tuning.span_grad import run_span
from tests.core.test_batched_step import close
from tests.models import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prefill", [7, 3])  # the prompt fits in the prefill, or spills into the steps
def test_cached_steps_with_deep_prompts_equal_recomputing(tiny_models, family, prefill):
    span = Span.load(tiny_models[family], 1, 5)
    torch.manual_seed(5)
    prompts = torch.randn(span.num_blocks, 5, 64) * 0.5
    sequence = torch.randn(1, 10, 64)
    runtime = SpanRuntime(span, max_cache_tokens=64)
    runtime.open_session("s", 16)
    outs = [runtime.forward("s", sequence[:, :prefill], prompts=prompts)]
    outs += [runtime.forward("s", sequence[:, t:t + 1], prompts=prompts) for t in range(prefill, 10)]
    with torch.inference_mode():
        want = run_span(span, sequence, prompts)
    close(torch.cat(outs, dim=1), want)
    plain = SpanRuntime(span, max_cache_tokens=64)
    plain.open_session("p", 16)
    assert (plain.forward("p", sequence) - want).abs().max() > 1e-3  # the prompts matter


def test_deep_prompts_of_the_wrong_shape_are_refused(tiny_models):
    runtime = SpanRuntime(Span.load(tiny_models["llama"], 0, 2), max_cache_tokens=64)
    runtime.open_session("s", 16)
    with pytest.raises(ShapeError, match="deep prompts must be"):
        runtime.forward("s", torch.randn(1, 3, 64), prompts=torch.randn(3, 2, 64))
