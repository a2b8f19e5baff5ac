"""`corolla bootstrap`: run a DHT-only peer that others use to find the swarm."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bootstrap", help="run a DHT-only peer and print its address for others to join")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all interfaces)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    p.add_argument("--identity", type=Path, default=None,
                   help="file holding this peer's key (created if missing; 'ephemeral': a new key for this run only; "
                        "default: this installation's key for the role, the same whatever the port)")
    p.add_argument("--relay", default="auto", choices=["auto", "on", "off"],
                   help="relay circuits for peers behind home routers (auto: on, a bootstrap peer must be "
                        "reachable anyway)")
    p.add_argument("--swarm-key", type=Path, default=None, metavar="FILE",
                   help="run a private swarm: only peers holding this key file can connect "
                        "(created if missing; give it to the members)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from corolla.app.serve.runtime import main_bootstrap
    from corolla.p2p.pnet import read_swarm_key, write_swarm_key

    key = None
    if args.swarm_key is not None:
        if args.swarm_key.exists():
            key = read_swarm_key(args.swarm_key)
        else:
            key = write_swarm_key(args.swarm_key)
            print(f"created swarm key {args.swarm_key}: give a copy to each member (--swarm-key FILE)", flush=True)
    return main_bootstrap(args.host, args.port, args.identity, args.relay, key)
