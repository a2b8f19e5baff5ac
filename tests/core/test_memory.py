"""How many blocks fit in a memory budget, from the config alone."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from corolla.core.errors import CorollaError
from corolla.core.memory import RESERVE_BYTES, block_bytes, blocks_that_fit


def llama70b(blocks: int = 80) -> LlamaConfig:
    return LlamaConfig(hidden_size=8192, intermediate_size=28672, num_attention_heads=64, num_key_value_heads=8,
                       num_hidden_layers=blocks, vocab_size=32000)


def test_block_bytes_match_the_measured_70b_block():
    # measured on the GPU: the seven linear weights of this block take 1.71 GB in bf16, 0.44 GB in nf4
    assert block_bytes(llama70b(), torch.bfloat16) == pytest.approx(1.71e9, rel=0.01)
    assert block_bytes(llama70b(), torch.bfloat16, "nf4") == pytest.approx(0.44e9, rel=0.05)


def test_blocks_that_fit_count_weights_and_cache():
    config = llama70b()
    per_block = block_bytes(config, torch.bfloat16, "nf4") + 4096 * 2 * 8 * 128 * 2  # nf4 weights, 4096-token cache
    budget = RESERVE_BYTES + 10 * per_block + per_block // 2
    assert blocks_that_fit(config, budget, torch.bfloat16, "nf4", 4096) == 10
    assert blocks_that_fit(config, 10**15, torch.bfloat16, "nf4", 4096) == 80  # never more than the model has
    with pytest.raises(CorollaError, match="max-gpu-memory"):
        blocks_that_fit(config, RESERVE_BYTES + per_block // 2, torch.bfloat16, "nf4", 4096)
