"""Fixtures for the swarm tests: a tiny random Llama saved as real safetensors, and peers on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_BLOCKS = 6
TINY_HIDDEN = 64


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-block Llama with hidden size 64 and random weights, in a model folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=TINY_HIDDEN, intermediate_size=128,
                         num_hidden_layers=TINY_BLOCKS, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    return path
