"""Read only the tensors you need from a folder of safetensors shards."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open

from corolla.core.errors import ModelNotFoundError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def weight_map(folder: Path) -> dict[str, str]:
    """Tensor name -> shard file name, for a sharded or single-file checkpoint."""
    index = folder / INDEX_NAME
    if index.is_file():
        return dict(json.loads(index.read_text())["weight_map"])
    single = folder / SINGLE_NAME
    if single.is_file():
        with safe_open(str(single), framework="pt") as f:
            return {name: SINGLE_NAME for name in f.keys()}  # noqa: SIM118 - a safetensors handle, not a dict
    raise ModelNotFoundError(
        f"{folder} has no {INDEX_NAME} or {SINGLE_NAME}; a model folder needs safetensors weights"
    )


def load_tensors(folder: Path, names: Iterable[str], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Load the named tensors, opening only the shards that hold them (missing names are skipped)."""
    mapping = weight_map(folder)
    by_shard: dict[str, list[str]] = {}
    for name in names:
        if name in mapping:
            by_shard.setdefault(mapping[name], []).append(name)
    out: dict[str, torch.Tensor] = {}
    for shard, shard_names in by_shard.items():
        with safe_open(str(folder / shard), framework="pt") as f:
            for name in shard_names:
                tensor = f.get_tensor(name)
                out[name] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    return out


def names_with_prefix(folder: Path, prefix: str) -> list[str]:
    """All tensor names in the checkpoint that start with `prefix`."""
    return [name for name in weight_map(folder) if name.startswith(prefix)]
