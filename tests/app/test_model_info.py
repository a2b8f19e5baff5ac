"""`corolla model info` describes a model: family, blocks, memory per block, chat template."""

from __future__ import annotations

import argparse

import torch

from corolla.app.commands.model import run_info
from corolla.core.span import Span
from tests.family_models import CHAT_TEMPLATE, make_family_model


def test_model_info_of_a_mixture_of_experts_model(tmp_path, capsys):
    path = make_family_model(tmp_path / "moe", "qwen2-moe")
    assert run_info(argparse.Namespace(model=str(path))) == 0
    out = capsys.readouterr().out
    assert "family:      Mixture of experts (qwen2_moe)" in out
    assert "blocks:      4" in out
    dense, sparse = Span.load(path, 1, 2).weight_bytes(), Span.load(path, 0, 1).weight_bytes()
    assert f"memory per block: {dense / 1024:.1f} KiB to {sparse / 1024:.1f} KiB as stored" in out
    assert f"{dense / 2048:.1f} KiB to {sparse / 2048:.1f} KiB in bfloat16" in out
    kv = 2 * 2 * 16 * torch.empty((), dtype=torch.bfloat16).element_size()  # k+v, 2 kv heads of 16
    assert f"attention cache: {kv} B per token per block" in out
    assert "chat template:\n    " + CHAT_TEMPLATE in out


def test_model_info_without_a_chat_template(tmp_path, capsys):
    path = make_family_model(tmp_path / "gemma", "gemma2")
    (path / "chat_template.jinja").unlink(missing_ok=True)
    assert run_info(argparse.Namespace(model=str(path))) == 0
    out = capsys.readouterr().out
    assert "family:      Gemma (gemma2)" in out
    assert "chat template: none" in out


def test_model_info_of_an_image_text_gemma3_counts_its_text_blocks(tmp_path, capsys):
    path = make_family_model(tmp_path / "gemma3", "gemma3-image-text")
    assert run_info(argparse.Namespace(model=str(path))) == 0
    out = capsys.readouterr().out
    assert "family:      Gemma (gemma3)" in out
    assert "blocks:      4" in out
    block = Span.load(path, 0, 1).weight_bytes()  # the vision tower is no block
    assert f"memory per block: {block / 1024:.1f} KiB as stored" in out
