"""Llama-shaped decoders: rotary positions, pre-norm blocks called as transformers' own models call
them. `RotaryFamily` is the shared runner; Llama 2/3.x and Mistral are its plainest members."""

from __future__ import annotations

import importlib

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from corolla.core.families.base import (
    Family,
    HeadKeys,
    cache_keyword,
    call_with_cache,
    layer_index,
    step_positions,
)

LLAMA_HEAD_KEYS = HeadKeys(embed="model.embed_tokens.weight", final_norm=("model.norm.weight",),
                           lm_head="lm_head.weight")


def modeling(model_type: str):
    """transformers' modeling module of `model_type` (e.g. transformers.models.qwen3.modeling_qwen3)."""
    return importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")


class RotaryFamily(Family):
    """Decoders whose layers take (hidden, mask, position ids, cache, rotary cos/sin) and whose
    checkpoints keep blocks under `model.layers.N.`. Subclasses name their classes per model type."""

    class_prefix: dict[str, str] = {}  # model_type -> class name prefix, e.g. "qwen3" -> "Qwen3"
    module_of: dict[str, str] = {}  # model_type -> transformers module, where the two differ
    head_keys = LLAMA_HEAD_KEYS

    @property
    def model_types(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.class_prefix)

    def block_prefix(self, index: int) -> str:
        return f"model.layers.{index}."

    def _cls(self, config: PretrainedConfig, suffix: str):
        module = modeling(self.module_of.get(config.model_type, config.model_type))
        return getattr(module, self.class_prefix[config.model_type] + suffix)

    def build_block(self, config: PretrainedConfig, local_index: int) -> nn.Module:
        return self._cls(config, "DecoderLayer")(config, local_index)

    def make_positional(self, config: PretrainedConfig) -> nn.Module:
        return self._cls(config, "RotaryEmbedding")(config=config)

    def attention_kind(self, config: PretrainedConfig, index: int) -> str:
        """'sliding_attention' or 'full_attention' for the block in cache slot `index`."""
        # The same rule transformers' DynamicCache follows, so masks and cache slots agree.
        layer_types = getattr(config, "layer_types", None)
        if layer_types:
            return layer_types[index]
        return "sliding_attention" if getattr(config, "sliding_window", None) is not None else "full_attention"

    def _masks(self, blocks, config, hidden, cache, position_ids, attention_mask) -> list:
        """One mask per block. Sizes come from the cache slot of a block of the same kind: a span
        may run only some of its blocks (a sub-span), so slot 0 may be empty."""
        masks: dict[str, object] = {}
        kinds = []
        for block in blocks:
            index = layer_index(block)
            kind = self.attention_kind(config, index)
            if kind not in masks:
                make = create_sliding_window_causal_mask if kind == "sliding_attention" else create_causal_mask
                masks[kind] = call_with_cache(make, cache, config=config, inputs_embeds=hidden,
                                              attention_mask=attention_mask, position_ids=position_ids,
                                              layer_idx=index)
            kinds.append(kind)
        return [masks[kind] for kind in kinds]

    def position_embeddings(self, positional, hidden, position_ids, kinds: set[str]) -> dict[str, object]:
        """Rotary cos/sin per attention kind (one table for all kinds unless the family has several)."""
        table = positional(hidden, position_ids=position_ids)
        return dict.fromkeys(kinds, table)

    def run_blocks(self, blocks, positional, config, hidden, cache, past_length) -> torch.Tensor:
        # past_length is one number, or one per row for a batch of sessions (left-padded caches)
        position_ids, attention_mask = step_positions(past_length, hidden.shape[1], hidden.device)
        masks = self._masks(blocks, config, hidden, cache, position_ids, attention_mask)
        kinds = [self.attention_kind(config, layer_index(block)) for block in blocks]
        tables = self.position_embeddings(positional, hidden, position_ids, set(kinds))
        for block, mask, kind in zip(blocks, masks, kinds):
            hidden = block(
                hidden,
                attention_mask=mask,
                position_ids=position_ids,
                use_cache=cache is not None,
                position_embeddings=tables[kind],
                **{cache_keyword(type(block).forward): cache},
            )
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        return hidden


class LlamaFamily(RotaryFamily):
    """Llama 2, Llama 3.x (its rope scaling lives in the rotary module built from the config), Mistral."""

    name = "Llama"
    class_prefix = {"llama": "Llama", "mistral": "Mistral"}
