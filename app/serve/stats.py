"""A volunteer's contribution, kept across restarts: tokens served, sessions, time online.

Counted by the server (p2p/server.py counts tokens and sessions; the runtime the time it serves) and
kept in a small JSON file next to the identity's key ("server.key" -> "server.stats.json"): the
totals belong to the peer id, whatever the port or the run. The server reports them on the status
channel (Event.STATS); the app reads the file to show them while no server runs.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedStats:
    tokens: int = 0  # tokens computed for others (each token of each session's steps)
    sessions: int = 0  # inference sessions opened
    seconds_online: float = 0.0  # time spent serving, s

    def plus(self, other: ServedStats) -> ServedStats:
        return ServedStats(self.tokens + other.tokens, self.sessions + other.sessions,
                           self.seconds_online + other.seconds_online)

    def describe(self) -> str:
        """For the tray: "1,234 tokens · 5 sessions · 2.5 h online"."""
        hours = self.seconds_online / 3600
        online = f"{hours:.1f} h" if hours >= 0.1 else f"{self.seconds_online / 60:.0f} min"
        return (f"{self.tokens:,} token{'s' if self.tokens != 1 else ''} · "
                f"{self.sessions:,} session{'s' if self.sessions != 1 else ''} · {online} online")


def stats_file(identity: Path) -> Path:
    """The stats file that belongs to the key file `identity`."""
    return identity.with_name(identity.stem + ".stats.json")


def load_stats(path: Path) -> ServedStats:
    """The totals in `path`; zero when it is missing or unreadable (said in the log, never fatal)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ServedStats()
    except (OSError, ValueError) as exc:
        log.warning("contribution stats %s unreadable (%s); counting from zero", path, exc)
        return ServedStats()
    try:
        stats = ServedStats(int(data["tokens"]), int(data["sessions"]), float(data["seconds_online"]))
    except (TypeError, KeyError, ValueError) as exc:
        log.warning("contribution stats %s damaged (%s); counting from zero", path, exc)
        return ServedStats()
    if min(stats.tokens, stats.sessions, stats.seconds_online) < 0:
        log.warning("contribution stats %s hold negative counts; counting from zero", path)
        return ServedStats()
    return stats


def save_stats(path: Path, stats: ServedStats) -> None:
    """Write atomically: a crash leaves the previous totals or the new ones, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(stats)), encoding="utf-8")
    os.replace(tmp, path)
