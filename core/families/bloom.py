"""BLOOM (the model of the original swarm paper): ALiBi positions, LayerNorm, eager attention only."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.masking_utils import create_causal_mask
from transformers.models.bloom.modeling_bloom import BloomBlock, build_alibi_tensor

from corolla.core.families.base import (
    Family,
    HeadKeys,
    cache_kwargs,
    call_with_cache,
    layer_index,
    step_positions,
)


class BloomFamily(Family):
    name = "BLOOM"
    model_types = ("bloom",)
    attn_implementation = "eager"
    head_keys = HeadKeys(
        embed="transformer.word_embeddings.weight",
        final_norm=("transformer.ln_f.weight", "transformer.ln_f.bias"),
        lm_head="lm_head.weight",
        embed_norm=("transformer.word_embeddings_layernorm.weight", "transformer.word_embeddings_layernorm.bias"),
    )

    def block_prefix(self, index: int) -> str:
        return f"transformer.h.{index}."

    def build_block(self, config: PretrainedConfig, local_index: int) -> nn.Module:
        return BloomBlock(config, layer_idx=local_index)

    def run_blocks(self, blocks, positional, config, hidden, cache, past_length) -> torch.Tensor:
        batch, tokens, _ = hidden.shape
        position_ids, attention_mask = step_positions(past_length, tokens, hidden.device)
        # In a left-padded batch ALiBi counts each row's positions from its first real token.
        rows = attention_mask if attention_mask is not None else torch.ones(
            batch, past_length + tokens, dtype=torch.long, device=hidden.device)
        alibi = build_alibi_tensor(rows, config.n_head, dtype=hidden.dtype)  # [batch * heads, 1, kv_length]
        mask = call_with_cache(create_causal_mask, cache, config=config, inputs_embeds=hidden,
                               attention_mask=attention_mask, position_ids=position_ids,
                               layer_idx=layer_index(blocks[0]))
        for block in blocks:
            hidden = block(hidden, alibi=alibi, attention_mask=mask, **cache_kwargs(block, cache),
                           use_cache=cache is not None)[0]
        return hidden
