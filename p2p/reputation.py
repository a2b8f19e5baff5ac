"""What this client has seen of each server, kept across runs: spot-checks passed and failed.

A server caught returning wrong activations is distrusted for a time that doubles with every
failure (up to a week), in this run and the next ones. The file is JSON, checked on load: a damaged
file is set aside, never trusted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DISTRUST_FIRST_S = 3600.0
DISTRUST_MAX_S = 7 * 24 * 3600.0
MAX_PEERS = 10_000  # the file keeps the most recently seen peers


@dataclass
class PeerRecord:
    """Spot-check results for one peer; times are Unix seconds."""

    checks: int = 0
    failures: int = 0
    last_failure: float = 0.0
    last_seen: float = 0.0


class Reputation:
    """Per-peer records, saved to `path` after every change (None: this run only)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.peers: dict[str, PeerRecord] = self._load() if path else {}

    @classmethod
    def default(cls) -> Reputation:
        from platformdirs import user_data_dir

        return cls(Path(user_data_dir("corolla", appauthor=False)) / "reputation.json")

    def passed(self, peer_id: str) -> None:
        rec = self.peers.setdefault(peer_id, PeerRecord())
        rec.checks += 1
        rec.last_seen = time.time()
        self._save()

    def failed(self, peer_id: str) -> None:
        rec = self.peers.setdefault(peer_id, PeerRecord())
        rec.checks += 1
        rec.failures += 1
        rec.last_failure = rec.last_seen = time.time()
        self._save()

    def distrusted(self, peer_id: str) -> bool:
        """Whether `peer_id` failed a check recently (the time doubles with each failure)."""
        rec = self.peers.get(peer_id)
        if rec is None or rec.failures == 0:
            return False
        span = min(DISTRUST_FIRST_S * 2 ** min(rec.failures - 1, 20), DISTRUST_MAX_S)
        return time.time() - rec.last_failure < span

    def _load(self) -> dict[str, PeerRecord]:
        if self.path is None:
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable reputation file %s: %s", self.path, exc)
            return {}
        peers: dict[str, PeerRecord] = {}
        if not isinstance(raw, dict):
            return peers
        for pid, rec in list(raw.items())[:MAX_PEERS]:
            try:
                values = {k: rec[k] for k in ("checks", "failures", "last_failure", "last_seen")}
                if isinstance(pid, str) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                and math.isfinite(v) and v >= 0 for v in values.values()):
                    peers[pid] = PeerRecord(int(values["checks"]), int(values["failures"]),
                                            float(values["last_failure"]), float(values["last_seen"]))
            except (KeyError, TypeError):
                continue
        return peers

    def _save(self) -> None:
        if self.path is None:
            return
        keep = sorted(self.peers.items(), key=lambda kv: kv[1].last_seen, reverse=True)[:MAX_PEERS]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({pid: asdict(rec) for pid, rec in keep}), encoding="utf-8")
        os.replace(tmp, self.path)
