"""Fixtures for the swarm tests: a tiny random Llama saved as real safetensors shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-block Llama with hidden size 64 and random weights, in a model folder."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")
