"""LoRA adapters for the tiny test models, made and saved by PEFT itself (random A and B, so that the
adapter really changes the output). Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch


def make_lora(model_path: Path, folder: Path, *, seed: int = 0, rank: int = 4, alpha: float = 16.0,
              targets: str | list[str] = "all-linear", std: float = 0.2, **options) -> Path:
    """A PEFT LoRA adapter of the model at `model_path`, saved (adapter_config.json and
    adapter_model.safetensors) into `folder`; A and B are random with standard deviation `std`.
    `options`: more LoraConfig fields (use_rslora, alpha_pattern, ...)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets,
                                                  init_lora_weights=False, **options))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    peft_model.save_pretrained(folder)
    return folder


def peft_model(model_path: Path, adapter: Path):
    """The base model with the adapter, as PEFT runs it (the reference)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path), adapter).eval()
