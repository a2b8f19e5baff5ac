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
    info = actions.add_parser("info", help="print a model's family, blocks, hidden size and identity hash")
    info.add_argument("model", nargs="?", default="default")
    info.set_defaults(func=run_info)


def run_prepare(args: argparse.Namespace) -> int:
    from corolla.core.model import resolve_model

    started = time.perf_counter()
    path = resolve_model(args.model)
    print(f"{args.model}: ready at {path} ({time.perf_counter() - started:.1f} s)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from corolla.core.model import ModelInfo, resolve_model

    info = ModelInfo.load(resolve_model(args.model))
    print(f"name:        {info.name}")
    print(f"path:        {info.path}")
    print(f"family:      {info.config.model_type}")
    print(f"blocks:      {info.num_blocks}")
    print(f"hidden size: {info.hidden_size}")
    print(f"hash:        {info.hash}")
    return 0
