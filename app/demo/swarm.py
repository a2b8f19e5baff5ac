"""`corolla demo`'s swarm: a bootstrap peer and servers on this machine, each a real process.

Used by the demo command, by the GUI's tests against real processes and by bench/gui_latency.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Self

from corolla.app.demo.processes import ChildProcess, stop_all
from corolla.p2p.identity import EPHEMERAL
from corolla.p2p.names import blocks_text

DEFAULT_SPANS = ((0, 10), (10, 20), (20, 30))
_JOIN = re.compile(r"join with: --initial-peers (\S+)")
_SERVING = re.compile(r"serving blocks? \S+ of .* as (\S+);")


class DemoSwarm:
    """A local swarm: `start()` returns the initial peers to join; `stop()` ends every process."""

    def __init__(self, model: str = "default", spans: tuple[tuple[int, int], ...] = DEFAULT_SPANS,
                 workdir: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.model = model
        self.spans = spans
        # Nothing on disk unless asked: keys are made fresh for the run and output is kept in memory,
        # so a demo that is killed leaves no folder behind.
        self.workdir = Path(workdir) if workdir is not None else None
        self.extra_args = extra_args
        self.bootstrap: ChildProcess | None = None
        self.servers: list[ChildProcess] = []
        self.initial_peers: list[str] = []

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, progress: Callable[[str], None] = print) -> list[str]:
        """Start the bootstrap peer, then the servers (in parallel); return the initial peers."""
        from corolla.core.model import resolve_model

        progress(f"preparing model {self.model!r} (the first time takes about 30 s)…")
        resolve_model(self.model)  # once here, so the servers do not all convert it at the same time
        try:
            self.bootstrap = self._spawn("bootstrap", ["bootstrap", "--host", "127.0.0.1",
                                                       "--identity", self._identity("bootstrap")])
            addr = self.bootstrap.wait_for(_JOIN.pattern).group(1)
            self.initial_peers = [addr]
            progress(f"bootstrap peer: {addr}")
            for start, end in self.spans:
                self.add_server(start, end, wait=False)
            for server in self.servers:
                self._wait_serving(server)
                progress(f"{server.name} is serving ({server.peer_id})")
        except BaseException:
            self.stop()
            raise
        return self.initial_peers

    def add_server(self, start: int, end: int, wait: bool = True, nickname: str = "") -> ChildProcess:
        """Start one more server for blocks [start, end) joined to this swarm (named demo-N unless
        `nickname` says otherwise)."""
        n = len(self.servers)
        server = self._spawn(f"server{n}", [
            "serve", "--model", self.model, "--blocks", f"{start}:{end}", "--host", "127.0.0.1",
            "--identity", self._identity(f"server{n}"), "--initial-peers", *self.initial_peers,
            "--nickname", nickname or f"demo-{n}", *self.extra_args,
        ])
        server.name = f"server {n} ({blocks_text(start, end)})"  # for messages; its log file is server{n}.log
        self.servers.append(server)
        if wait:
            self._wait_serving(server)
        return server

    def _wait_serving(self, server: ChildProcess) -> None:
        server.peer_id = server.wait_for(_SERVING.pattern).group(1)

    def _identity(self, name: str) -> str:
        return str(self.workdir / f"{name}.key") if self.workdir is not None else EPHEMERAL

    def _spawn(self, name: str, args: list[str]) -> ChildProcess:
        return ChildProcess(name, ["--log-level", "INFO", *args], self.workdir)

    def stop(self) -> None:
        stop_all(self.servers, self.bootstrap)
        self.servers, self.bootstrap = [], None

