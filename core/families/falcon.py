"""Falcon (7B/40B/180B and the ALiBi variants): blocks under `transformer.h.N.`, LayerNorm,
parallel attention and MLP, rotary positions or ALiBi biases folded into the mask."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.masking_utils import create_causal_mask
from transformers.models.falcon.modeling_falcon import (
    FalconDecoderLayer,
    FalconRotaryEmbedding,
    build_alibi_tensor,
)

from corolla.core.families.base import Family, HeadKeys, call_with_cache, layer_index


class FalconFamily(Family):
    name = "Falcon"
    model_types = ("falcon",)
    head_keys = HeadKeys(embed="transformer.word_embeddings.weight",
                         final_norm=("transformer.ln_f.weight", "transformer.ln_f.bias"), lm_head="lm_head.weight")

    def block_prefix(self, index: int) -> str:
        return f"transformer.h.{index}."

    def build_block(self, config: PretrainedConfig, local_index: int) -> nn.Module:
        return FalconDecoderLayer(config, layer_idx=local_index)

    def make_positional(self, config: PretrainedConfig) -> nn.Module | None:
        return None if config.alibi else FalconRotaryEmbedding(config=config)

    def _mask_and_alibi(self, config, hidden, cache, position_ids, layer_idx) -> tuple:
        mask = call_with_cache(create_causal_mask, cache, config=config, inputs_embeds=hidden, attention_mask=None,
                               position_ids=position_ids, layer_idx=layer_idx, allow_is_causal_skip=False)
        if not config.alibi or mask is None or mask.ndim != 4:
            return mask, None
        # As FalconModel does: the ALiBi bias, scaled like the attention scores, becomes the mask.
        batch, tokens, _ = hidden.shape
        kv_length = mask.shape[-1]
        ones = torch.ones((batch, kv_length), device=hidden.device, dtype=torch.long)
        alibi = build_alibi_tensor(ones, config.num_attention_heads, dtype=hidden.dtype)
        alibi = alibi.reshape(batch, -1, *alibi.shape[1:])
        min_dtype = torch.finfo(hidden.dtype).min
        if mask.dtype == torch.bool:
            mask = torch.where(mask, torch.full((), 0.0, device=mask.device, dtype=hidden.dtype), min_dtype)
        head_dim = config.hidden_size // config.num_attention_heads
        return torch.masked_fill(alibi / math.sqrt(head_dim), mask < -1, min_dtype), alibi

    def run_blocks(self, blocks, positional, config, hidden, cache, past_length) -> torch.Tensor:
        tokens = hidden.shape[1]
        position_ids = torch.arange(past_length, past_length + tokens, device=hidden.device).unsqueeze(0)
        mask, alibi = self._mask_and_alibi(config, hidden, cache, position_ids, layer_index(blocks[0]))
        rotary = positional(hidden, position_ids=position_ids) if positional is not None else None
        for block in blocks:
            hidden = block(hidden, alibi=alibi, attention_mask=mask, position_ids=position_ids, layer_past=cache,
                           use_cache=cache is not None, position_embeddings=rotary)[0]
        return hidden

    def kv_bytes_per_token(self, config: PretrainedConfig, num_blocks: int, dtype: torch.dtype) -> int:
        heads = config.num_attention_heads
        # FalconAttention caches keys and values already spread to every query head in the new
        # (40B/180B) layout, one shared head with multi-query (7B).
        if config.new_decoder_architecture:
            kv_heads = heads
        else:
            kv_heads = 1 if config.multi_query else config.num_kv_heads
        head_dim = config.hidden_size // heads
        return num_blocks * 2 * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
