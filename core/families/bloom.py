"""BLOOM (the model of the original swarm paper): ALiBi positions, LayerNorm, eager attention only."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.masking_utils import create_causal_mask
from transformers.models.bloom.modeling_bloom import BloomBlock, _get_alibi_slopes

from corolla.core.families.base import Family, HeadKeys, layer_index


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
        slopes = _get_alibi_slopes(config.n_head, hidden.device)
        alibi = (slopes[:, None, None] * torch.arange(kv_length, device=hidden.device)).repeat(batch, 1, 1)
        alibi = alibi.to(hidden.dtype)
        position_ids = torch.arange(past_length, kv_length, device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(config=config, inputs_embeds=hidden, attention_mask=None, cache=cache,
                                  position_ids=position_ids, layer_idx=layer_index(blocks[0]))
        for block in blocks:
            hidden = block(hidden, alibi=alibi, attention_mask=mask, layer_past=cache,
                           use_cache=cache is not None)[0]
        return hidden
