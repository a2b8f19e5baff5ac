"""Phi-3 and Phi-4 (model type phi3): fused q/k/v and gate/up projections; long-context rope
scaling (longrope) picks its factors from the positions, which the span passes absolute."""

from __future__ import annotations

from corolla.core.families.llama import RotaryFamily


class PhiFamily(RotaryFamily):
    name = "Phi"
    class_prefix = {"phi3": "Phi3"}
