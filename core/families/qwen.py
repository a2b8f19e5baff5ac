"""Qwen2 / Qwen2.5 (model type qwen2: biased q/k/v) and Qwen3 (q/k norms; optional sliding layers)."""

from __future__ import annotations

from corolla.core.families.llama import RotaryFamily


class QwenFamily(RotaryFamily):
    name = "Qwen"
    class_prefix = {"qwen2": "Qwen2", "qwen3": "Qwen3"}
