"""Mixture-of-experts decoders: Mixtral, Qwen2-MoE / Qwen1.5-MoE, Qwen3-MoE, OLMoE, DeepSeek-V3.

A block is the whole layer: attention, router and every expert, so a server holds all experts of
its blocks and `block_bytes` counts them all. Checkpoints keep one tensor per expert; transformers'
layers hold them stacked, so `block_state` stacks them. Which layers are sparse depends on the
global layer index; `span_config` restates that for a span's local indices."""

from __future__ import annotations

import re

import torch
from transformers import PretrainedConfig

from corolla.core.errors import UnsupportedModelError
from corolla.core.families.llama import RotaryFamily

# experts.<e>.<projection>.weight, in Mixtral's names (w1 gate, w3 up, w2 down) or everyone else's
_EXPERT_KEY = re.compile(r"^(?P<prefix>.*\.experts)\.(?P<expert>\d+)\.(?P<proj>w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$")
_ROLE = {"w1": "gate", "gate_proj": "gate", "w3": "up", "up_proj": "up", "w2": "down", "down_proj": "down"}


def stack_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-expert weights -> `experts.gate_up_proj` [experts, 2*inner, hidden] and
    `experts.down_proj` [experts, hidden, inner]; other tensors pass through unchanged."""
    out: dict[str, torch.Tensor] = {}
    groups: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for name, tensor in state.items():
        m = _EXPERT_KEY.match(name)
        if m is None:
            out[name] = tensor
            continue
        groups.setdefault(m["prefix"], {}).setdefault(int(m["expert"]), {})[_ROLE[m["proj"]]] = tensor
    for prefix, experts in groups.items():
        if sorted(experts) != list(range(len(experts))) or any(len(e) != 3 for e in experts.values()):
            raise UnsupportedModelError(f"the checkpoint's experts under {prefix!r} are incomplete: every expert "
                                        "needs gate, up and down weights, numbered from 0")
        ordered = [experts[i] for i in range(len(experts))]
        out[f"{prefix}.gate_up_proj"] = torch.stack([torch.cat([e["gate"], e["up"]], dim=0) for e in ordered])
        out[f"{prefix}.down_proj"] = torch.stack([e["down"] for e in ordered])
    return out


def _sparse_layers(config: PretrainedConfig) -> list[bool]:
    """Which of the model's layers have experts (the others have a dense MLP)."""
    n = config.num_hidden_layers
    if config.model_type in ("qwen2_moe", "qwen3_moe"):
        dense = set(config.mlp_only_layers or [])
        step = config.decoder_sparse_step
        return [i not in dense and config.num_experts > 0 and (i + 1) % step == 0 for i in range(n)]
    if config.model_type == "deepseek_v3":
        return [i >= config.first_k_dense_replace for i in range(n)]
    return [True] * n


class MoeFamily(RotaryFamily):
    name = "Mixture of experts"
    class_prefix = {"mixtral": "Mixtral", "qwen2_moe": "Qwen2Moe", "qwen3_moe": "Qwen3Moe", "olmoe": "Olmoe",
                    "deepseek_v3": "DeepseekV3"}

    def block_prefix(self, index: int) -> str:
        return f"model.layers.{index}."

    def block_state(self, config: PretrainedConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if config.model_type == "mixtral":
            state = {name.replace("block_sparse_moe.", "mlp."): t for name, t in state.items()}
        return stack_experts(state)

    def span_config(self, config: PretrainedConfig, start: int, end: int) -> PretrainedConfig:
        sparse = _sparse_layers(config)[start:end]
        cfg = super().span_config(config, start, end)
        if config.model_type in ("qwen2_moe", "qwen3_moe"):
            cfg.mlp_only_layers = [i for i, s in enumerate(sparse) if not s]
            cfg.decoder_sparse_step = 1
        elif config.model_type == "deepseek_v3":
            cfg.first_k_dense_replace = sum(1 for s in sparse if not s)  # dense layers come first
        return cfg

    def kv_bytes_per_token(self, config: PretrainedConfig, num_blocks: int, dtype: torch.dtype) -> int:
        if config.model_type != "deepseek_v3":
            return super().kv_bytes_per_token(config, num_blocks, dtype)
        # Latent attention caches the compressed key/value and the one shared rotary key, not per-head ones.
        per_token = config.kv_lora_rank + config.qk_rope_head_dim
        return num_blocks * per_token * torch.empty((), dtype=dtype).element_size()
