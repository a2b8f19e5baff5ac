"""How linear weights are stored: a span's quantized with bitsandbytes (int8, nf4) or, on a CPU, in
4 bits for PyTorch's own kernel (int4, core/int4.py); on a CPU, the client head's LM head
column-major (`column_major`).

A quantized span holds about a quarter (nf4) or half (int8) of the weight memory of bf16, so a
volunteer's GPU serves more blocks. bitsandbytes quantizes when the module is moved with `.to()`.
Relative error of one layer, measured here: int8 about 0.005, nf4 about 0.08.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn

from corolla.core import int4
from corolla.core.errors import CorollaError


class Quantization(str, Enum):
    NONE = "none"
    INT8 = "int8"
    NF4 = "nf4"
    INT4 = "int4"  # CPU only


class QuantizationUnavailableError(CorollaError):
    """bitsandbytes is missing or cannot run here."""


def parse_quantization(value: str) -> Quantization:
    try:
        return Quantization(value.lower())
    except ValueError:
        raise CorollaError(f"unknown quantization {value!r}; choose none, int8, nf4 or int4") from None


def _bnb():
    try:
        import bitsandbytes
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken native library
        raise QuantizationUnavailableError(
            f"int8/nf4 quantization needs bitsandbytes ({type(exc).__name__}: {exc}); "
            "install it with: pip install 'corolla[gpu]', or serve with --quant none"
        ) from None
    return bitsandbytes


def _quantized_linear(linear: nn.Linear, mode: Quantization, compute_dtype: torch.dtype) -> nn.Module:
    bnb = _bnb()
    has_bias = linear.bias is not None
    weight = linear.weight.data.detach().to(torch.float16 if mode is Quantization.INT8 else compute_dtype)
    if mode is Quantization.INT8:
        q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                has_fp16_weights=False, threshold=0.0, device="meta")
        q.weight = bnb.nn.Int8Params(weight.contiguous(), requires_grad=False, has_fp16_weights=False)
    else:
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias, quant_type="nf4",
                              compute_dtype=compute_dtype, device="meta")
        q.weight = bnb.nn.Params4bit(weight.contiguous(), requires_grad=False, quant_type="nf4")
    if has_bias:
        q.bias = nn.Parameter(linear.bias.data.detach().to(compute_dtype), requires_grad=False)
    return q


def check_device(mode: Quantization, device: str | torch.device) -> None:
    """int4 is PyTorch's CPU kernel: refuse it elsewhere, or where this PyTorch lacks it."""
    if mode is not Quantization.INT4:
        return
    if torch.device(device).type != "cpu":
        raise CorollaError("int4 is for CPU servers; on a GPU use --quant nf4 (a quarter of bf16's memory too)")
    if not int4.available():
        raise QuantizationUnavailableError(f"int4 needs PyTorch 2.6 or later (this is {torch.__version__})")


def quantize_linears(module: nn.Module, mode: Quantization, compute_dtype: torch.dtype) -> nn.Module:
    """Swap every nn.Linear inside `module` for a bitsandbytes layer (quantized on the next .to()) or,
    for int4, a CPU int4 layer (a layer the kernel cannot take stays as it is)."""
    if mode is Quantization.NONE:
        return module
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            if mode is Quantization.INT4:
                if int4.fits(child):
                    setattr(module, name, int4.Int4Linear(child))
            else:
                setattr(module, name, _quantized_linear(child, mode, compute_dtype))
        else:
            quantize_linears(child, mode, compute_dtype)
    return module


def column_major(weight: torch.Tensor) -> torch.Tensor:
    """`weight` [out, in] with the same values and shape, stored column-major (a transposed view).

    MKL multiplies one row by a wide weight stored (in, out) faster than by the usual (out, in) one:
    the default model's LM head (49152 x 576, one row of logits, one thread) 6.8-8.5 against
    11.6-14.2 ms here. Not used for the blocks: there a one-token step gained about 10 % (30 blocks,
    48-51 against 54-58 ms), a pass of 4 sessions together lost as much (90-96 against 81-83 ms),
    and one-token and longer steps rounded further apart."""
    return weight.t().contiguous().t()


def weight_bytes(module: nn.Module) -> int:
    """Bytes of parameters and buffers (quantized weights count at their packed size)."""
    tensors = list(module.parameters()) + list(module.buffers())
    total = sum(t.numel() * t.element_size() for t in tensors)
    for m in module.modules():  # nf4 keeps its scales in a side structure
        state = getattr(getattr(m, "weight", None), "quant_state", None)
        if state is not None and getattr(state, "absmax", None) is not None:
            total += state.absmax.numel() * state.absmax.element_size()
    return total
