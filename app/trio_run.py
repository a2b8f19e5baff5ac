"""Running a command's trio loop so that a Corolla error inside nurseries surfaces as itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from corolla.app.errors import corolla_error_in


def run_trio(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """trio.run, with a CorollaError (or Ctrl-C) raised inside nurseries re-raised as itself rather
    than as an exception group, so that the command line prints its message, not a traceback."""
    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:
        first = corolla_error_in(group, also=(KeyboardInterrupt,))
        if first is not None:
            raise first from group
        raise
