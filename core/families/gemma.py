"""Gemma, Gemma 2 and Gemma 3 (text): embeddings scaled by sqrt(hidden), norms that scale by
(1 + weight), Gemma 2/3's alternating sliding-window and global layers, and soft-capping."""

from __future__ import annotations

import inspect

import torch
from transformers import PretrainedConfig

from corolla.core.families.base import HeadKeys
from corolla.core.families.llama import RotaryFamily


class GemmaFamily(RotaryFamily):
    name = "Gemma"
    class_prefix = {"gemma": "Gemma", "gemma2": "Gemma2", "gemma3_text": "Gemma3"}
    module_of = {"gemma3_text": "gemma3"}

    def span_config(self, config: PretrainedConfig, start: int, end: int) -> PretrainedConfig:
        cfg = super().span_config(config, start, end)
        # Gemma 2 caps attention logits (tanh soft-capping), which only the eager kernel applies.
        if getattr(cfg, "attn_logit_softcapping", None) is not None:
            cfg._attn_implementation = "eager"
        return cfg

    def position_embeddings(self, positional, hidden, position_ids, kinds: set[str]) -> dict[str, object]:
        if "layer_type" not in inspect.signature(type(positional).forward).parameters:
            return super().position_embeddings(positional, hidden, position_ids, kinds)
        # Gemma 3 rotates local (sliding) and global layers with different bases.
        return {kind: positional(hidden, position_ids, kind) for kind in kinds}

    def scale_embeddings(self, config: PretrainedConfig, hidden: torch.Tensor) -> torch.Tensor:
        # The scale is rounded to the embedding dtype first, as transformers does (55.4256 -> 55.5 in bf16).
        return hidden * torch.tensor(config.hidden_size**0.5).to(hidden.dtype)

    def final_norm(self, config: PretrainedConfig, hidden: torch.Tensor,
                   params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (weight,) = params
        x = hidden.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + config.rms_norm_eps)
        return (x * (1.0 + weight.float())).to(hidden.dtype)

    def finish_logits(self, config: PretrainedConfig, logits: torch.Tensor) -> torch.Tensor:
        cap = getattr(config, "final_logit_softcapping", None)
        if cap is None:
            return logits
        return torch.tanh(logits / cap) * cap


class Gemma3ImageTextFamily(GemmaFamily):
    """Gemma 3 4B/12B/27B checkpoints (model type gemma3): their text decoder, under `language_model.`.
    Text in, text out; the vision tower is never loaded."""

    model_types = ("gemma3",)  # type: ignore[assignment]
    head_keys = HeadKeys(embed="language_model.model.embed_tokens.weight",
                         final_norm=("language_model.model.norm.weight",), lm_head="language_model.lm_head.weight")

    def block_prefix(self, index: int) -> str:
        return f"language_model.model.layers.{index}."

    def decoder_config(self, config: PretrainedConfig) -> PretrainedConfig:
        return config.get_text_config()

    def finish_logits(self, config: PretrainedConfig, logits: torch.Tensor) -> torch.Tensor:
        return logits  # transformers' image-text Gemma 3 applies no final soft-capping
