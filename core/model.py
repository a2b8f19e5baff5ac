"""Finding a model (the default, a local folder, or a hub id) and describing it."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig

from corolla.core.default_model import DEFAULT_MODEL_NAME, prepare_default_model
from corolla.core.errors import ModelNotFoundError
from corolla.core.families import Family, family_for
from corolla.core.weights import INDEX_NAME, SINGLE_NAME

DEFAULT = "default"


def resolve_model(name: str, progress: bool = True) -> Path:
    """A local folder for `name`: 'default', a path to a model folder, or a hub id (downloaded)."""
    if name == DEFAULT:
        return prepare_default_model(progress=progress)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is not a model folder: it has no config.json")
        return path
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelNotFoundError(f"model folder {path} does not exist")
    return _download(name)


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"],
            )
        )
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, gated model: all end the same way for the user
        raise ModelNotFoundError(
            f"could not get model {repo_id!r} from the model hub ({type(exc).__name__}: {exc}). "
            "If this machine is offline, download the model elsewhere and point at the folder: "
            "--model /path/to/folder (it needs config.json, tokenizer files and *.safetensors)"
        ) from None


@dataclass(frozen=True)
class ModelInfo:
    """What peers must agree on about a model: its name, its family, its size and its identity hash."""

    path: Path
    name: str
    hash: str  # hex digest of the config and weights index: peers with other checkpoints never mix
    config: PretrainedConfig
    family: Family
    num_blocks: int
    hidden_size: int

    @classmethod
    def load(cls, path: Path | str) -> ModelInfo:
        path = Path(path)
        config = AutoConfig.from_pretrained(path)
        family = family_for(config)
        name = config.name_or_path if config.name_or_path not in ("", str(path)) else path.name
        return cls(
            path=path,
            name=_short_name(name or path.name),
            hash=model_hash(path),
            config=config,
            family=family,
            num_blocks=family.decoder_config(config).num_hidden_layers,
            hidden_size=family.decoder_config(config).hidden_size,
        )


def _short_name(name: str) -> str:
    return DEFAULT_MODEL_NAME if name == DEFAULT_MODEL_NAME else Path(name).name


def model_hash(path: Path) -> str:
    """Digest of config.json (minus volatile fields) and the safetensors index or header."""
    digest = hashlib.sha256()
    config = json.loads((path / "config.json").read_text())
    for volatile in ("transformers_version", "_name_or_path", "name_or_path"):
        config.pop(volatile, None)
    digest.update(json.dumps(config, sort_keys=True).encode())
    index = path / INDEX_NAME
    if index.is_file():
        digest.update(json.dumps(json.loads(index.read_text()), sort_keys=True).encode())
    elif (path / SINGLE_NAME).is_file():
        with open(path / SINGLE_NAME, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            digest.update(f.read(header_len))
    else:
        raise ModelNotFoundError(f"{path} has no safetensors weights ({INDEX_NAME} or {SINGLE_NAME})")
    return digest.hexdigest()[:16]
