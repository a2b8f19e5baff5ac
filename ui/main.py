"""The installed `corolla` command: the app's command line plus the GUI commands, `app` by default."""

from __future__ import annotations

import sys

from corolla.app.cli import COMMANDS
from corolla.app.cli import main as cli_main

GUI_COMMANDS = ["corolla.ui.commands.app", "corolla.ui.commands.demo"]


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, [*COMMANDS, *GUI_COMMANDS], default_command="app")


if __name__ == "__main__":
    sys.exit(main())
