"""The `corolla` command: one entry point, one module per subcommand under app/commands/."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Before torch loads: a volunteer's machine runs other things (games, a browser, other servers);
# busy-waiting OpenMP workers burn its cores between steps, and on a loaded machine they make every
# step many times slower (measured: 62 ms -> 1.9 s per token on 2 busy cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Each module exposes `register(subparsers)`, which adds its parser and sets `func=run(args) -> int`.
# Modules are imported lazily by name so `corolla --help` stays fast and a broken optional
# part (say, Qt libraries missing) does not break every other command.
COMMANDS = [
    "model",
    "generate",
    "serve",
    "bootstrap",
    "swarm",
    "app",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corolla",
        description="Run large language models across volunteers' GPUs.",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ...)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"app.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("libp2p", "multiaddr", "transformers"):
        logging.getLogger(noisy).setLevel(max(logging.ERROR, logging.getLogger().level))
    if args.command is None:
        if "app" in COMMANDS:  # the tray app is the default when it exists
            return main(["app", *(argv or [])])
        parser.print_help()
        return 0
    from app.errors import corolla_error_in

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        # trio wraps errors of concurrent tasks in exception groups: report the one a user can act on
        reason = corolla_error_in(exc)
        if reason is None:
            raise
        print(f"corolla: error: {reason}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
