"""Shared fixtures: the default model and tiny random models of every family."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.models import FAMILIES, make_tiny_model

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def corolla_dirs(tmp_path, monkeypatch):
    """Settings, history and peer keys go to this test's tmp_path, never into the real user dirs."""
    monkeypatch.setenv("COROLLA_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("COROLLA_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The embedded default model, prepared once (about 30 s the first time on a new machine)."""
    from corolla.core.model import resolve_model

    return resolve_model("default", progress=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, default_model_path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {f: make_tiny_model(root / f, f, tokenizer_dir=default_model_path) for f in FAMILIES}
