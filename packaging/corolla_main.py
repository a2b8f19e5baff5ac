"""The bundle's entry point: the `corolla` command, or a server/API child when started as one.

A bundle has no Python interpreter to run `python -m corolla.app.serve.child` with, so children are
started as this same executable with `child.FROZEN_FLAG` first (see `corolla.app.serve.child.command`).
"""

import multiprocessing
import os
import sys


def main() -> int:
    """Run the child entry point when the flag comes first, else the `corolla` command line."""
    from corolla.app.serve.child import FROZEN_FLAG

    if len(sys.argv) > 1 and sys.argv[1] == FROZEN_FLAG:
        from corolla.app.serve.child import main as child_main

        return child_main(sys.argv[2:])
    from corolla.ui.main import main as corolla_main

    return corolla_main()


if __name__ == "__main__":
    # Windows' windowed Corolla.exe has no console: Python then has no stdout/stderr at all, and
    # progress bars or a print would raise. Children get pipes from their parent, so they keep theirs.
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
    multiprocessing.freeze_support()  # a no-op unless something starts multiprocessing workers
    sys.exit(main())
