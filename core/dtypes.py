"""The tensor dtypes Corolla computes in and sends between peers, by name (one table for all)."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
ELEMENT_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2}

# Relative error two honest peers may show on the same span output: float32 differs only by the order
# of sums (cached steps vs one pass); half precisions round every activation.
TOLERANCE: dict[str, float] = {"float32": 1e-3, "float16": 2e-2, "bfloat16": 5e-2}
# ... and a server whose weights are quantized (core/quantization.py) against one whose are not: the
# default model in int4 was 0.004-0.027 off float32 over a prompt in 10-block spans, 0.065 over all 30
# blocks (bfloat16: 0.032). Such a server's small lies (a 2 % scaling) pass; random or zero outputs
# do not.
QUANT_TOLERANCE: dict[str, float] = {"none": 0.0, "int8": 5e-2, "nf4": 0.1, "int4": 0.1}


def tolerance(precision: str | tuple[str, str]) -> float:
    """Relative error allowed for a server computing at `precision`: a dtype name, or (dtype name,
    quantization) as ServerInfo.precision gives it. Unknown names get the loosest."""
    dtype, quant = (precision, "none") if isinstance(precision, str) else precision
    return max(TOLERANCE.get(dtype, 5e-2), QUANT_TOLERANCE.get(quant, 5e-2))
