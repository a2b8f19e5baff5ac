"""`corolla serve`: lend this machine to the swarm by serving a span of a model's blocks."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


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
    p.add_argument("--quant", default="none", choices=["none", "int8", "nf4"],
                   help="quantize the span's weights with bitsandbytes (nf4: a quarter of bf16's memory; "
                        "int8 is slow for single-token steps on GPUs)")
    p.add_argument("--max-sessions", type=int, default=16, help="sessions served at once")
    p.add_argument("--cache-tokens", type=int, default=8192,
                   help="attention-cache budget in tokens, shared by all sessions")
    p.add_argument("--identity", type=Path, default=None,
                   help="file holding this peer's key (created if missing; keeps the peer id across restarts)")
    p.add_argument("--announce-period", type=float, default=30.0, help="seconds between DHT announcements")
    p.add_argument("--rebalance-period", type=float, default=120.0,
                   help="with --num-blocks: seconds between checks whether another span is needed more (0: never)")
    p.add_argument("--drain-timeout", type=float, default=10.0,
                   help="seconds to let open sessions finish when stopping")
    p.add_argument("--swarm-key", type=Path, default=None, metavar="FILE",
                   help="join a private swarm: the key file its members share")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # OMP_WAIT_POLICY=PASSIVE is set by app.cli before torch loads.
    from corolla.app.serve.runtime import NodeConfig, main_server
    from corolla.core.errors import CorollaError
    from corolla.p2p.pnet import read_swarm_key
    from corolla.p2p.records import BlockRange

    try:
        blocks = BlockRange.parse(args.blocks) if args.blocks else None
    except ValueError as exc:
        raise CorollaError(str(exc)) from None
    if args.num_blocks is not None and args.num_blocks < 1:
        raise CorollaError("--num-blocks must be at least 1")
    for name in ("max_sessions", "cache_tokens"):
        if getattr(args, name) < 1:
            raise CorollaError(f"--{name.replace('_', '-')} must be at least 1")
    # One line per session opened and closed is part of what a server shows its operator.
    logging.getLogger("corolla").setLevel(min(logging.INFO, logging.getLogger().level or logging.INFO))
    cfg = NodeConfig(
        model=args.model, blocks=blocks, num_blocks=args.num_blocks, initial_peers=list(args.initial_peers),
        host=args.host, port=args.port, device=args.device, dtype=args.dtype,
        quant=args.quant,
        max_sessions=args.max_sessions, cache_tokens=args.cache_tokens, identity=args.identity,
        announce_period=args.announce_period, drain_timeout=args.drain_timeout,
        rebalance_period=args.rebalance_period,
        swarm_key=read_swarm_key(args.swarm_key) if args.swarm_key else None,
    )
    return main_server(cfg)
