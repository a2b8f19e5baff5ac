"""Supported model families. Adding one is a module with a `Family` subclass, listed here."""

from __future__ import annotations

from transformers import PretrainedConfig

from corolla.core.errors import UnsupportedModelError
from corolla.core.families.base import Family, HeadKeys
from corolla.core.families.bloom import BloomFamily
from corolla.core.families.falcon import FalconFamily
from corolla.core.families.gemma import Gemma3ImageTextFamily, GemmaFamily
from corolla.core.families.llama import LlamaFamily
from corolla.core.families.moe import MoeFamily
from corolla.core.families.phi import PhiFamily
from corolla.core.families.qwen import QwenFamily

FAMILIES: tuple[Family, ...] = (LlamaFamily(), QwenFamily(), GemmaFamily(), Gemma3ImageTextFamily(), PhiFamily(),
                                FalconFamily(), BloomFamily(), MoeFamily())


def family_for(config: PretrainedConfig) -> Family:
    """The family that runs models of this config's `model_type`."""
    for family in FAMILIES:
        if config.model_type in family.model_types:
            return family
    supported = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise UnsupportedModelError(
        f"model type {config.model_type!r} is not supported; supported types: {supported}"
    )


__all__ = ["FAMILIES", "Family", "HeadKeys", "family_for"]
