"""BLOOM (the model of the original swarm paper): ALiBi positions, LayerNorm, eager attention only."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.masking_utils import create_causal_mask
from transformers.models.bloom.modeling_bloom import BloomBlock, build_alibi_tensor

from corolla.core.families.base import Family, HeadKeys, call_with_cache, layer_index


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
        kv_length = past_length + tokens
        ones = torch.ones((batch, kv_length), device=hidden.device, dtype=torch.long)
        alibi = build_alibi_tensor(ones, config.n_head, dtype=hidden.dtype)  # [batch * heads, 1, kv_length]
        position_ids = torch.arange(past_length, kv_length, device=hidden.device).unsqueeze(0)
        mask = call_with_cache(create_causal_mask, cache, config=config, inputs_embeds=hidden, attention_mask=None,
                               position_ids=position_ids, layer_idx=layer_index(blocks[0]))
        for block in blocks:
            hidden = block(hidden, alibi=alibi, attention_mask=mask, layer_past=cache,
                           use_cache=cache is not None)[0]
        return hidden
