"""`corolla serve`: lend this machine to the swarm by serving a span of a model's blocks."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from corolla.p2p.names import NICKNAME_MAX


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve blocks of a model to the swarm until stopped (Ctrl-C)")
    p.add_argument("--model", default="default", help="'default', a model folder or a hub id")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--blocks", default=None, help="blocks to serve, START:END (END excluded), e.g. 0:10")
    which.add_argument("--num-blocks", type=int, default=None,
                       help="serve this many blocks where the swarm needs them most")
    p.add_argument("--initial-peers", nargs="*", default=[],
                   help="multiaddrs of swarm peers; without them this server starts a new swarm")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all interfaces)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--quant", default="auto", choices=["auto", "none", "int8", "nf4", "int4"],
                   help="quantize the span's weights: int8 or nf4 with bitsandbytes (nf4: a quarter of "
                        "bf16's memory; int8 is slow for single-token steps on GPUs); int4 on a CPU with "
                        "PyTorch's own kernel (about 2.7x faster steps than float32); auto: nf4 on a CUDA "
                        "GPU when bitsandbytes is installed, else none")
    p.add_argument("--max-gpu-memory", type=float, default=None, metavar="GIB",
                   help="serve as many blocks as fit in this much memory (weights and their cache); "
                        "instead of --blocks/--num-blocks, or as an upper bound on --num-blocks")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="compute with at most N CPU threads (a CPU server leaves the rest of the machine free)")
    p.add_argument("--block-ms", type=float, default=None, metavar="MS",
                   help="announce MS milliseconds per block instead of measuring (a higher figure keeps "
                        "routes away from a machine that has other work to do)")
    p.add_argument("--max-sessions", type=int, default=16, help="sessions served at once")
    p.add_argument("--cache-tokens", type=int, default=8192,
                   help="attention-cache budget in tokens, shared by all sessions")
    p.add_argument("--identity", type=Path, default=None,
                   help="file holding this peer's key (created if missing; 'ephemeral': a new key for this run only; "
                        "default: this installation's key for the role, the same whatever the port)")
    p.add_argument("--announce-period", type=float, default=30.0, help="seconds between DHT announcements")
    p.add_argument("--rebalance-period", type=float, default=120.0,
                   help="with --num-blocks: seconds between checks whether another span is needed more (0: never)")
    p.add_argument("--relay", default="auto", choices=["auto", "on", "off"],
                   help="relay circuits for servers behind home routers: auto (when others can dial this "
                        "machine), on, off")
    p.add_argument("--drain-timeout", type=float, default=10.0,
                   help="seconds to let open sessions finish when stopping")
    p.add_argument("--nickname", default="",
                   help=f"a name others see beside this server's short id (at most {NICKNAME_MAX} printable characters)")
    p.add_argument("--status-json", action="store_true",
                   help="write status messages as JSON lines on stdout (for the app that starts this server; "
                        "words for people go to stderr)")
    p.add_argument("--swarm-key", type=Path, default=None, metavar="FILE",
                   help="join a private swarm: the key file its members share")
    p.add_argument("--adapter", nargs="+", default=[], type=Path, metavar="DIR",
                   help="PEFT LoRA adapter folders (adapter_config.json + adapter_model.safetensors) to offer; "
                        "each is served under its folder's name, and a client picks one per session "
                        "(generate --adapter NAME); the model's own weights never change")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # OMP_WAIT_POLICY=PASSIVE is set by app.cli before torch loads.
    from corolla.app.serve.runtime import NodeConfig, main_server
    from corolla.core.errors import CorollaError
    from corolla.p2p.names import NicknameError, check_nickname
    from corolla.p2p.pnet import read_swarm_key
    from corolla.p2p.records import BlockRange

    try:
        blocks = BlockRange.parse(args.blocks) if args.blocks else None
    except ValueError as exc:
        raise CorollaError(str(exc)) from None
    if args.num_blocks is not None and args.num_blocks < 1:
        raise CorollaError("--num-blocks must be at least 1")
    try:
        check_nickname(args.nickname)
    except NicknameError as exc:
        raise CorollaError(f"--nickname: {exc}") from None
    for name in ("max_sessions", "cache_tokens"):
        if getattr(args, name) < 1:
            raise CorollaError(f"--{name.replace('_', '-')} must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            raise CorollaError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    if args.block_ms is not None and not (0 < args.block_ms < 1e6):
        raise CorollaError("--block-ms must be a positive number of milliseconds")
    check_adapters(args.adapter)
    args.quant = resolve_quant(args.quant, args.device)
    from corolla.core.quantization import Quantization, check_device

    check_device(Quantization(args.quant), args.device)
    if args.max_gpu_memory is not None:
        if args.blocks:
            raise CorollaError("--max-gpu-memory chooses how many blocks to serve: use it without --blocks")
        fit = blocks_for_memory(args)
        args.num_blocks = min(fit, args.num_blocks) if args.num_blocks else fit
    # An operator watching the server sees a line per session opened and closed (words for people;
    # programs follow the server on the status channel, --status-json).
    logging.getLogger("corolla").setLevel(min(logging.INFO, logging.getLogger().level or logging.INFO))
    cfg = NodeConfig(
        model=args.model, blocks=blocks, num_blocks=args.num_blocks, initial_peers=list(args.initial_peers),
        host=args.host, port=args.port, device=args.device, dtype=args.dtype,
        quant=args.quant,
        max_sessions=args.max_sessions, cache_tokens=args.cache_tokens, identity=args.identity,
        announce_period=args.announce_period, drain_timeout=args.drain_timeout,
        rebalance_period=args.rebalance_period, status_json=args.status_json, relay=args.relay,
        swarm_key=read_swarm_key(args.swarm_key) if args.swarm_key else None, nickname=args.nickname,
        adapters=list(args.adapter), block_ms=args.block_ms,
    )
    return main_server(cfg)


def check_adapters(folders: list[Path]) -> None:
    """Refuse unusable adapter folders before joining the swarm (AdapterError in plain words)."""
    from corolla.core.adapters import WEIGHTS_FILE, AdapterConfig, AdapterError, adapter_name

    names = [adapter_name(folder) for folder in folders]
    for folder in folders:
        AdapterConfig.read(folder)
        if not (folder / WEIGHTS_FILE).is_file():
            raise AdapterError(f"{folder} has no {WEIGHTS_FILE} (only safetensors adapters are served)")
    if len(set(names)) != len(names):
        raise AdapterError("two adapter folders have the same name; each is served under its folder's name")


def resolve_quant(quant: str, device: str) -> str:
    """--quant auto: nf4 on CUDA when bitsandbytes is there (0.53 vs 0.47 ms per 70B-shaped block at
    a quarter of bf16's memory, measured on an H200), else none."""
    if quant != "auto":
        return quant
    import importlib.util

    return "nf4" if device.startswith("cuda") and importlib.util.find_spec("bitsandbytes") else "none"


def blocks_for_memory(args: argparse.Namespace) -> int:
    """--max-gpu-memory GiB as a number of blocks of the model, with --cache-tokens of cache each."""
    import torch

    from corolla.core.errors import CorollaError
    from corolla.core.memory import blocks_that_fit
    from corolla.core.model import ModelInfo, resolve_model

    if args.max_gpu_memory <= 0:
        raise CorollaError("--max-gpu-memory must be a positive number of GiB")
    model = ModelInfo.load(resolve_model(args.model))
    return blocks_that_fit(model.config, int(args.max_gpu_memory * 2**30), getattr(torch, args.dtype),
                           args.quant, args.cache_tokens)
