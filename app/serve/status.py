"""The status channel from a `corolla serve` process to the program that started it.

With `corolla serve --status-json`, the server writes one JSON object per line on its stdout (and its
words for people go to stderr): `{"status": 1, "event": "serving", "start": 0, "end": 10, ...}`.
`status` is this format's version; a reader refuses other versions. Defined once, here, for the
writer (app/serve/runtime.py) and the reader (the app's contribution controller) alike.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Any, TextIO

from corolla.core.errors import CorollaError

STATUS_VERSION = 1
MAX_LINE = 64 * 1024  # characters; a longer line is not a status message


class StatusError(CorollaError):
    """A line on the status channel is not a status message of this version."""


class Event(str, Enum):
    LOADING = "loading"  # start, end: the blocks being loaded
    SERVING = "serving"  # start, end, peer_id; join_address when this server started a new swarm
    SESSIONS = "sessions"  # sessions: how many are open now
    MOVING = "moving"  # start, end: the blocks it is moving to (rebalancing)
    STOPPING = "stopping"  # sessions: still open, being drained
    STOPPED = "stopped"
    ERROR = "error"  # message: why the server cannot go on, for the user
    STATS = "stats"  # tokens_served, sessions_served, seconds_online: this identity's totals, all runs


@dataclass(frozen=True)
class ServerStatus:
    event: Event
    start: int | None = None  # first block
    end: int | None = None  # one past the last block
    sessions: int | None = None
    peer_id: str = ""
    join_address: str = ""
    message: str = ""
    tokens_served: int | None = None  # tokens computed for others (each token of each session)
    sessions_served: int | None = None  # inference sessions opened here
    seconds_online: int | None = None  # time spent serving

    def to_line(self) -> str:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if getattr(self, f.name) != f.default and f.name != "event"}
        return json.dumps({"status": STATUS_VERSION, "event": self.event.value, **fields})

    @classmethod
    def from_line(cls, line: str) -> ServerStatus:
        """Parse one line; StatusError if it is anything but a status message of this version."""
        if len(line) > MAX_LINE:
            raise StatusError("status line too long")
        try:
            data = json.loads(line)
        except ValueError:
            raise StatusError(f"not a status message: {line[:80]!r}") from None
        if not isinstance(data, dict) or data.get("status") != STATUS_VERSION:
            raise StatusError(f"not a version {STATUS_VERSION} status message: {line[:80]!r}")
        try:
            event = Event(data.get("event"))
        except ValueError:
            raise StatusError(f"unknown status event {data.get('event')!r}") from None
        kwargs: dict[str, Any] = {}
        for name in ("start", "end", "sessions", "tokens_served", "sessions_served", "seconds_online"):
            value = data.get(name)
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise StatusError(f"status field {name} must be a whole number >= 0, not {value!r}")
                kwargs[name] = value
        for name in ("peer_id", "join_address", "message"):
            value = data.get(name, "")
            if not isinstance(value, str):
                raise StatusError(f"status field {name} must be text, not {value!r}")
            kwargs[name] = value
        return cls(event, **kwargs)


class StatusWriter:
    """Sends status messages as lines on `stream` (thread-safe, flushed); a no-op when disabled."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self._stream = stream or sys.stdout
        self.enabled = enabled
        self._lock = threading.Lock()

    def send(self, status: ServerStatus) -> None:
        if not self.enabled:
            return
        with self._lock:
            try:
                self._stream.write(status.to_line() + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # the reader is gone (the app quit); the server goes on until told to stop
