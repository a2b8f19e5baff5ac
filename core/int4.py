"""4-bit weights for CPU servers (`--quant int4`): PyTorch's own int4 kernel, no extra package.

Each row of a linear weight is cut into groups of GROUP inputs; a group keeps 4-bit codes 0..15 with
its own scale and zero point (asymmetric, min to max), and w = (code - 8) * scale + zero. A matmul
reads half a byte per weight instead of four: on this project's 2-core test machine, the default
model's 30 blocks took 19 ms a one-token step against 51 ms in float32 (one thread). Activations
enter the kernel as bfloat16 (with float32 ones it was 24x slower) and leave in the layer's dtype.
Relative error of one layer about 0.08 (as bitsandbytes' nf4 on a GPU); the default model's outputs
after all 30 blocks within 0.065 of float32's, relative to the largest value.

A weight the kernel cannot take (inputs not a multiple of GROUP, outputs not of 16) stays as it was.
Backward passes (fine-tuning through a server) multiply by the dequantized weight: the kernel's
packed layout is read back once per layer (`Int4Linear.codes`), at the first backward, and the codes
are kept from then on (one byte per weight).
"""

from __future__ import annotations

import torch
from torch import nn

GROUP = 32  # inputs per scale and zero point
OUT_MULTIPLE = 16  # the kernel packs outputs in tiles of 16


def available() -> bool:
    """Whether this PyTorch has the CPU int4 kernel (2.6 and later)."""
    return hasattr(torch, "_weight_int4pack_mm_for_cpu") and hasattr(torch, "_convert_weight_to_int4pack_for_cpu")


def fits(linear: nn.Linear) -> bool:
    return linear.in_features % GROUP == 0 and linear.out_features % OUT_MULTIPLE == 0


class _Int4Matmul(torch.autograd.Function):
    """x @ W.T with W in 4 bits; the gradient reaches x only (weights are frozen on a server)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: Int4Linear) -> torch.Tensor:
        ctx.layer = layer
        flat = x.reshape(-1, layer.in_features).to(torch.bfloat16)
        out = torch._weight_int4pack_mm_for_cpu(flat, layer.packed, GROUP, layer.scales_zeros)
        return out.to(x.dtype).reshape(*x.shape[:-1], layer.out_features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight = ctx.layer.dequantized()
        return (grad.to(torch.float32) @ weight).to(grad.dtype), None


class Int4Linear(nn.Module):
    """A frozen linear layer stored in 4 bits for PyTorch's CPU int4 kernel."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if not fits(linear):
            raise ValueError(f"a {linear.in_features}->{linear.out_features} layer does not fit int4 groups")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().to(torch.float32)
        groups = weight.reshape(self.out_features, -1, GROUP)
        low, high = groups.amin(-1), groups.amax(-1)
        scale = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
        codes = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15)
        codes = codes.to(torch.int32).reshape(self.out_features, self.in_features)
        self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(codes, 1))
        # [groups, outputs, 2]: scale and the value of code 8, as the kernel wants them
        self.register_buffer("scales_zeros",
                             torch.stack([scale.t(), (low + 8 * scale).t()], -1).to(torch.bfloat16).contiguous())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self._codes: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _Int4Matmul.apply(x, self)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def codes(self) -> torch.Tensor:
        """The 4-bit codes [out, in] (uint8), read back from the kernel's packed layout once and kept."""
        if self._codes is None:
            order = _packed_order(self.out_features, self.in_features)
            nibbles = torch.stack([self.packed & 15, self.packed >> 4], -1).reshape(-1)
            codes = torch.empty(self.out_features * self.in_features, dtype=torch.uint8)
            codes[order] = nibbles
            self._codes = codes.reshape(self.out_features, self.in_features)
        return self._codes

    def dequantized(self) -> torch.Tensor:
        """The weight [out, in] the kernel computes with, in float32."""
        scale, zero = self.scales_zeros.to(torch.float32).unbind(-1)  # [groups, out] each
        codes = self.codes().to(torch.float32).reshape(self.out_features, -1, GROUP)
        weight = (codes - 8) * scale.t()[..., None] + zero.t()[..., None]
        return weight.reshape(self.out_features, self.in_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group={GROUP}, bias={self.bias is not None}"


def _packed_order(rows: int, cols: int) -> torch.Tensor:
    """For each 4-bit slot of the packed layout (each byte's low nibble, then its high one), the flat
    index row * cols + col of the code it holds. Found by packing the indices themselves, four bits at
    a time, so that it follows whatever layout this PyTorch uses."""
    index = torch.arange(rows * cols, dtype=torch.int64)
    order = torch.zeros_like(index)
    for shift in range(0, max(1, (rows * cols - 1).bit_length()), 4):
        digits = ((index >> shift) & 15).to(torch.int32).reshape(rows, cols)
        packed = torch._convert_weight_to_int4pack_for_cpu(digits, 1).reshape(-1)
        order |= torch.stack([packed & 15, packed >> 4], -1).reshape(-1).to(torch.int64) << shift
    return order
