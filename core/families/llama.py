"""Llama-like decoders (Llama, Mistral, Qwen2): rotary positions, RMSNorm, transformers' own layers."""

from __future__ import annotations

import importlib

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from corolla.core.families.base import Family, HeadKeys, cache_kwargs, layer_index, step_positions

_CLASS_PREFIX = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}


def _modeling(model_type: str):
    return importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")


class LlamaFamily(Family):
    model_types = tuple(_CLASS_PREFIX)
    head_keys = HeadKeys(embed="model.embed_tokens.weight", final_norm=("model.norm.weight",),
                         lm_head="lm_head.weight")

    def block_prefix(self, index: int) -> str:
        return f"model.layers.{index}."

    def _cls(self, config: PretrainedConfig, suffix: str):
        return getattr(_modeling(config.model_type), _CLASS_PREFIX[config.model_type] + suffix)

    def build_block(self, config: PretrainedConfig, local_index: int) -> nn.Module:
        return self._cls(config, "DecoderLayer")(config, local_index)

    def make_positional(self, config: PretrainedConfig) -> nn.Module:
        return self._cls(config, "RotaryEmbedding")(config=config)

    @staticmethod
    def _attention_kind(config: PretrainedConfig, index: int) -> str:
        if config.model_type == "mistral" and getattr(config, "sliding_window", None):
            return "sliding_attention"
        layer_types = getattr(config, "layer_types", None) or []
        return layer_types[index] if index < len(layer_types) else "full_attention"

    def _masks(self, blocks, config, hidden, cache, position_ids, attention_mask) -> list:
        """One mask per block. Sizes come from the cache slot of a block of the same kind: a span
        may run only some of its blocks (a sub-span), so slot 0 may be empty."""
        masks: dict[str, object] = {}
        kinds = []
        for block in blocks:
            index = layer_index(block)
            kind = self._attention_kind(config, index)
            if kind not in masks:
                make = create_sliding_window_causal_mask if kind == "sliding_attention" else create_causal_mask
                # The cache goes by position: its keyword changed name across transformers 5.x.
                masks[kind] = make(config, hidden, attention_mask, cache, position_ids=position_ids, layer_idx=index)
            kinds.append(kind)
        return [masks[kind] for kind in kinds]

    def run_blocks(self, blocks, positional, config, hidden, cache, past_length) -> torch.Tensor:
        position_ids, attention_mask = step_positions(past_length, hidden.shape[1], hidden.device)
        masks = self._masks(blocks, config, hidden, cache, position_ids, attention_mask)
        position_embeddings = positional(hidden, position_ids=position_ids)
        for block, mask in zip(blocks, masks):
            hidden = block(
                hidden,
                attention_mask=mask,
                position_ids=position_ids,
                **cache_kwargs(block, cache),
                use_cache=cache is not None,
                position_embeddings=position_embeddings,
            )
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        return hidden
