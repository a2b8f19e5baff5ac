"""The `corolla` command line, without the GUI: one module per subcommand under app/commands/.

The installed `corolla` entry point is corolla.ui.main, which adds the GUI commands (`app`, `demo`)
from ui/commands/ and hands everything to `main` here; `python -m corolla.app` is the same command
line without them (what servers started by the app and by tests run).
"""

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
    "corolla.app.commands.model",
    "corolla.app.commands.generate",
    "corolla.app.commands.serve",
    "corolla.app.commands.bootstrap",
    "corolla.app.commands.swarm",
    "corolla.app.commands.api",
    "corolla.app.commands.finetune",
]


def build_parser(commands: list[str] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corolla",
        description="Run large language models across volunteers' GPUs.",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ...)")
    parser.add_argument("--version", action="version", version=f"corolla {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in commands:
        importlib.import_module(module).register(sub)
    return parser


def version() -> str:
    """This installation's version, from its package metadata (a bundle carries a copy)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("corolla")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None, commands: list[str] = COMMANDS,
         default_command: str | None = None) -> int:
    """Run one command; with no command, `default_command` (the GUI's `app`) or the help."""
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("libp2p", "multiaddr", "transformers"):
        logging.getLogger(noisy).setLevel(max(logging.ERROR, logging.getLogger().level))
    if args.command is None:
        if default_command is not None:
            return main([default_command, *(argv or [])], commands)
        parser.print_help()
        return 0
    from corolla.app.errors import corolla_error_in

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
