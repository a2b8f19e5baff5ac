"""int8 / nf4 spans through bitsandbytes (runs on the CPU here, slowly; on a GPU server for real)."""

from __future__ import annotations

import pytest
import torch

from corolla.core.errors import CorollaError
from corolla.core.head import ClientHead
from corolla.core.quantization import parse_quantization
from corolla.core.span import Span

pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize(("mode", "max_weight_ratio", "max_error"), [("int8", 0.26, 0.01), ("nf4", 0.14, 0.1)])
def test_quantized_span_is_smaller_and_close(default_model_path, mode, max_weight_ratio, max_error):
    reference = Span.load(default_model_path, 4, 7)
    quantized = Span.load(default_model_path, 4, 7, quant=mode)
    # real hidden states: a real prompt's embeddings through the blocks before the span
    ids = torch.tensor([[504, 3575, 282, 4649, 314, 7042, 30]])
    hidden = Span.load(default_model_path, 0, 4)(ClientHead.load(default_model_path).embed(ids))
    want, got = reference(hidden), quantized(hidden)
    error = ((got - want).norm() / want.norm()).item()
    assert error < max_error, f"{mode}: relative error {error:.4f}"
    assert quantized.weight_bytes() / reference.weight_bytes() < max_weight_ratio
    assert got.dtype == hidden.dtype and got.shape == hidden.shape


def test_unknown_quantization_is_refused():
    with pytest.raises(CorollaError, match="choose none, int8, nf4 or int4"):
        parse_quantization("fp3")
