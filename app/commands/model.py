"""`corolla model prepare|info`: get a model ready to serve or chat with, and describe it."""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("model", help="prepare or describe a model")
    actions = parser.add_subparsers(dest="model_action", metavar="ACTION", required=True)
    prepare = actions.add_parser("prepare", help="make a model usable offline ('default' converts the embedded one)")
    prepare.add_argument("model", nargs="?", default="default", help="'default', a model folder or a hub id")
    prepare.set_defaults(func=run_prepare)
    info = actions.add_parser("info", help="print a model's family, blocks, memory per block, identity hash and chat template")
    info.add_argument("model", nargs="?", default="default")
    info.set_defaults(func=run_info)


def run_prepare(args: argparse.Namespace) -> int:
    from corolla.core.model import resolve_model

    started = time.perf_counter()
    path = resolve_model(args.model)
    print(f"{args.model}: ready at {path} ({time.perf_counter() - started:.1f} s)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    import torch

    from corolla.core.model import ModelInfo, resolve_model

    info = ModelInfo.load(resolve_model(args.model))
    family, config = info.family, info.config
    stored = [family.block_bytes(info.path, i) for i in range(info.num_blocks)]
    half = [family.block_bytes(info.path, i, torch.bfloat16) for i in range(info.num_blocks)]
    print(f"name:        {info.name}")
    print(f"path:        {info.path}")
    print(f"family:      {family.name} ({config.model_type})")
    print(f"blocks:      {info.num_blocks}")
    print(f"hidden size: {info.hidden_size}")
    print(f"memory per block: {_spread(stored)} as stored, {_spread(half)} in bfloat16 "
          f"(all blocks: {_size(sum(stored))} as stored)")
    kv = family.kv_bytes_per_token(family.decoder_config(config), 1, torch.bfloat16)
    print(f"attention cache: {_size(kv)} per token per block in bfloat16")
    print(f"hash:        {info.hash}")
    template = _chat_template(info.path)
    if template is None:
        print("chat template: none (prompts are sent as plain text)")
    else:
        print("chat template:")
        for line in template.splitlines():
            print(f"    {line}")
    return 0


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _spread(sizes: list[int]) -> str:
    """One size when every block is alike; else the range, since dense and expert blocks differ."""
    low, high = min(sizes), max(sizes)
    return _size(high) if low == high else f"{_size(low)} to {_size(high)}"


def _chat_template(path) -> str | None:
    """The chat template as the tokenizer files hold it (no tokenizer is loaded)."""
    import json

    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = path / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template
        if isinstance(template, list):  # named templates: show the default one
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            return named.get("default") or next(iter(named.values()), None)
    return None
