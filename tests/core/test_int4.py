"""4-bit CPU weights (core/int4.py): what the kernel computes, backward passes, which layers it takes,
its memory, and where it is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from corolla.core import int4
from corolla.core.errors import CorollaError
from corolla.core.head import ClientHead
from corolla.core.memory import block_bytes
from corolla.core.model import ModelInfo
from corolla.core.quantization import Quantization, check_device, quantize_linears
from corolla.core.span import Span
from corolla.core.tuning.span_grad import span_backward

pytestmark = pytest.mark.skipif(not int4.available(), reason="this PyTorch has no CPU int4 kernel")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_a_layer_computes_with_its_dequantized_weight_and_is_close_to_float():
    torch.manual_seed(0)
    linear = nn.Linear(96, 48, bias=True)
    layer = int4.Int4Linear(linear)
    x = torch.randn(2, 5, 96)
    out = layer(x)
    assert out.shape == (2, 5, 48) and out.dtype == torch.float32
    weight = layer.dequantized()
    # what the kernel computes: the dequantized weight times bfloat16 inputs
    assert relative(out, x.bfloat16().float() @ weight.t() + linear.bias) < 5e-3
    # 4 bits per weight: about 8 % off per layer, as nf4 on a GPU
    assert relative(weight, linear.weight) < 0.12
    assert relative(out, linear(x)) < 0.12
    assert (weight - linear.weight).abs().max() > 0  # it is quantized, not a copy


def test_the_gradient_goes_through_the_dequantized_weight():
    torch.manual_seed(1)
    linear = nn.Linear(64, 32, bias=False)
    layer = int4.Int4Linear(linear)
    x = torch.randn(3, 64, requires_grad=True)
    grad = torch.randn(3, 32)
    layer(x).backward(grad)
    assert torch.allclose(x.grad, grad @ layer.dequantized(), rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in layer.parameters())


def test_layers_the_kernel_cannot_take_stay_as_they_were():
    # outputs not a multiple of 16; inputs not a multiple of the group
    module = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 40), nn.Linear(40, 48))
    quantize_linears(module, Quantization.INT4, torch.float32)
    assert [type(m).__name__ for m in module] == ["Int4Linear", "Linear", "Linear"]
    assert module(torch.randn(1, 64)).shape == (1, 48)


def test_an_int4_span_is_smaller_close_to_float32_and_takes_backward_passes(default_model_path):
    reference = Span.load(default_model_path, 4, 7)
    quantized = Span.load(default_model_path, 4, 7, quant="int4")
    assert quantized.quant is Quantization.INT4
    ids = torch.tensor([[504, 3575, 282, 4649, 314, 7042, 30]])
    hidden = Span.load(default_model_path, 0, 4)(ClientHead.load(default_model_path).embed(ids)).clone()
    want, got = reference(hidden), quantized(hidden)
    assert relative(got, want) < 0.02
    assert got.dtype == hidden.dtype and got.shape == hidden.shape
    ratio = quantized.weight_bytes() / reference.weight_bytes()
    assert 0.12 < ratio < 0.17, ratio  # half a byte and two bfloat16 per 32 weights, against four bytes
    # memory planning counts a block as loaded (norms stay float32)
    config = ModelInfo.load(default_model_path).config
    planned = block_bytes(config, torch.float32, "int4")
    assert abs(planned - quantized.weight_bytes() / 3) / planned < 0.05
    grad = torch.randn(hidden.shape)
    got_grad, _ = span_backward(quantized, hidden, grad)
    want_grad, _ = span_backward(reference, hidden, grad)
    assert relative(got_grad, want_grad) < 0.05


def test_int4_is_refused_on_a_gpu_with_what_to_use_instead():
    with pytest.raises(CorollaError, match="int4 is for CPU servers; on a GPU use --quant nf4"):
        check_device(Quantization.INT4, "cuda")
    check_device(Quantization.INT4, "cpu")
    check_device(Quantization.NF4, "cuda")
