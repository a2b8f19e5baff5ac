"""How many blocks of a model fit in a memory budget: block weights plus their share of the cache.

Computed from the config alone (one block built on the meta device), so a server can choose its
span before it loads any weight.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig

from corolla.core.errors import CorollaError
from corolla.core.families import family_for
from corolla.core.quantization import Quantization

# Bytes per weight element after quantization: nf4 packs two per byte plus one scale per 64 weights,
# itself quantized to a byte (bitsandbytes' nested statistics); int8 keeps one byte plus a scale per
# row (about nothing); int4 (CPU) half a byte plus two bfloat16 per 32 weights. Checked against the
# measured 0.44 GB of a 70B-shaped block in nf4.
_QUANT_BYTES = {Quantization.NF4: 0.5 + 1 / 64, Quantization.INT8: 1.0, Quantization.INT4: 0.5 + 4 / 32}
RESERVE_BYTES = 1 << 30  # CUDA context, activations and allocator slack, kept free


def block_bytes(config: PretrainedConfig, dtype: torch.dtype, quant: Quantization | str = Quantization.NONE) -> int:
    """Memory one block's weights take on the device, in bytes (linear weights quantized as asked)."""
    family = family_for(config)
    span_config = family.span_config(config, 0, 1)
    with torch.device("meta"):
        block = family.build_block(span_config, 0)
    quant = Quantization(quant)
    size = torch.empty((), dtype=dtype).element_size()
    total = 0.0
    for module in block.modules():
        for name, p in module.named_parameters(recurse=False):
            quantized = quant is not Quantization.NONE and isinstance(module, torch.nn.Linear) and name == "weight"
            total += p.numel() * (_QUANT_BYTES[quant] if quantized else size)
    return int(total)


def blocks_that_fit(config: PretrainedConfig, budget_bytes: int, dtype: torch.dtype,
                    quant: Quantization | str, cache_tokens: int) -> int:
    """Blocks whose weights and `cache_tokens` tokens of attention cache fit in `budget_bytes`
    (less RESERVE_BYTES); at most the model's blocks. Raises CorollaError when not even one fits."""
    family = family_for(config)
    per_block = block_bytes(config, dtype, quant) + cache_tokens * family.kv_bytes_per_token(config, 1, dtype)
    n = min((budget_bytes - RESERVE_BYTES) // per_block, config.num_hidden_layers)
    if n < 1:
        raise CorollaError(
            f"one block needs {per_block / 2**30:.2f} GiB with its cache ({cache_tokens} tokens) plus "
            f"{RESERVE_BYTES / 2**30:.0f} GiB kept free, more than {budget_bytes / 2**30:.2f} GiB; "
            "raise --max-gpu-memory, lower --cache-tokens, or use --quant nf4")
    return int(n)
