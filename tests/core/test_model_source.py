"""Finding models: the default, local folders, hub ids offline, unsupported families."""

from __future__ import annotations

import json

import pytest

from corolla.core import default_model
from corolla.core.errors import ModelNotFoundError, UnsupportedModelError
from corolla.core.model import ModelInfo, resolve_model


def test_default_model_is_sharded_and_prepared_once(default_model_path, monkeypatch):
    shards = sorted(default_model_path.glob("model-*.safetensors"))
    assert len(shards) >= 3 and (default_model_path / "model.safetensors.index.json").is_file()
    info = ModelInfo.load(default_model_path)
    assert (info.name, info.num_blocks, info.hidden_size) == ("SmolLM2-135M-Instruct", 30, 576)
    assert "quantization_config" not in json.loads((default_model_path / "config.json").read_text())

    def convert_again(*args):
        raise AssertionError("a prepared default model must not be converted again")

    monkeypatch.setattr(default_model, "_convert", convert_again)
    assert resolve_model("default") == default_model_path


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_hub_id_offline_says_how_to_use_a_local_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match=r"--model /path/to/folder"):
        resolve_model("someone/some-model-that-is-not-cached")


def test_model_hash_tells_checkpoints_apart(tiny_models):
    hashes = {ModelInfo.load(p).hash for p in tiny_models.values()}
    assert len(hashes) == len(tiny_models)
    assert ModelInfo.load(tiny_models["llama"]).hash == ModelInfo.load(tiny_models["llama"]).hash


def test_unsupported_family_names_the_supported_ones(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    with pytest.raises(UnsupportedModelError, match="'gpt2' is not supported; supported types: llama"):
        ModelInfo.load(tmp_path)
