"""The contributed server's entry point: `corolla serve` that ends when the app that started it ends.

The app keeps this process's stdin open and never writes to it. End of input means the app quit,
crashed or was killed (on every OS the pipe closes with its owner), or that the app asks the server
to stop: the server then leaves as on Ctrl-C (no new sessions, open ones drain), and is ended
outright if it has not exited GRACE_S seconds later. Started as `command()` + `serve ...`: this module
under Python, or the installed bundle's own executable with FROZEN_FLAG first.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

GRACE_S = 20.0
FROZEN_FLAG = "--corolla-child"  # the bundle's executable runs `main` here when it comes first


def command() -> list[str]:
    """The program and first arguments that start a child; the child's own arguments follow."""
    if getattr(sys, "frozen", False):  # a bundle has no Python to run `-m` with: it is the program
        return [sys.executable, FROZEN_FLAG]
    return [sys.executable, "-m", "corolla.app.serve.child"]


def _watch_stdin() -> None:
    # The raw descriptor, not sys.stdin: a daemon thread blocked inside sys.stdin's buffer holds its
    # lock, and the interpreter aborts at exit when it cannot take it (SIGABRT instead of exit 0).
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass  # a closed or broken pipe: the same as end of input
    signal.raise_signal(signal.SIGINT)
    timer = threading.Timer(GRACE_S, lambda: os._exit(3))
    timer.daemon = True
    timer.start()


def main(argv: list[str]) -> int:
    threading.Thread(target=_watch_stdin, name="parent-watch", daemon=True).start()
    from corolla.app.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
