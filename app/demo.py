"""`corolla demo`'s swarm: a bootstrap peer and servers on this machine, each a real process.

Used by the demo command, by the GUI's tests against real processes and by bench/gui_latency.py.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from app.errors import DemoError

DEFAULT_SPANS = ((0, 10), (10, 20), (20, 30))
START_TIMEOUT = 180.0  # s for a process to say it is ready (loading a span on a busy CPU is slow)
_JOIN = re.compile(r"join with: --initial-peers (\S+)")
_SERVING = re.compile(r"serving blocks (\d+):(\d+) .* as (\S+);")


@dataclass
class NodeProcess:
    """One child process and the lines it printed (read by a thread so its pipe never fills)."""

    name: str
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)
    peer_id: str = ""

    def __post_init__(self) -> None:
        threading.Thread(target=self._drain, name=f"{self.name}-output", daemon=True).start()

    def _drain(self) -> None:
        if self.popen.stdout is None:
            return
        for line in self.popen.stdout:
            self.lines.append(line.rstrip())
            self._queue.put(line.rstrip())
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Block until the process prints a line matching `pattern`; DemoError if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoError(f"{self.name} was not ready after {timeout:.0f} s; it printed:\n" + self.tail())
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise DemoError(f"{self.name} exited (code {self.popen.wait()}); it printed:\n" + self.tail())
            m = pattern.search(line)
            if m:
                return m

    def tail(self, n: int = 15) -> str:
        return "\n".join(self.lines[-n:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def kill(self) -> None:
        """End it abruptly, as a crash would."""
        self.popen.kill()
        self.popen.wait(5)


class DemoSwarm:
    """A local swarm: `start()` returns the initial peers to join; `stop()` ends every process."""

    def __init__(self, model: str = "default", spans: tuple[tuple[int, int], ...] = DEFAULT_SPANS,
                 workdir: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.model = model
        self.spans = spans
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="corolla-demo-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.extra_args = extra_args
        self.bootstrap: NodeProcess | None = None
        self.servers: list[NodeProcess] = []
        self.initial_peers: list[str] = []

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, progress: Callable[[str], None] = print) -> list[str]:
        """Start the bootstrap peer, then the servers (in parallel); return the initial peers."""
        from core.model import resolve_model

        progress(f"preparing model {self.model!r} (the first time takes about 30 s)…")
        resolve_model(self.model)  # once here, so the servers do not all convert it at the same time
        try:
            self.bootstrap = self._spawn("bootstrap", ["bootstrap", "--host", "127.0.0.1",
                                                       "--identity", str(self.workdir / "bootstrap.key")])
            addr = self.bootstrap.wait_for(_JOIN, START_TIMEOUT).group(1)
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

    def add_server(self, start: int, end: int, wait: bool = True) -> NodeProcess:
        """Start one more server for blocks [start, end) joined to this swarm."""
        n = len(self.servers)
        name = f"server {n} (blocks {start}:{end})"
        server = self._spawn(name, [
            "serve", "--model", self.model, "--blocks", f"{start}:{end}", "--host", "127.0.0.1",
            "--identity", str(self.workdir / f"server{n}.key"), "--initial-peers", *self.initial_peers,
            *self.extra_args,
        ])
        self.servers.append(server)
        if wait:
            self._wait_serving(server)
        return server

    def _wait_serving(self, server: NodeProcess) -> None:
        server.peer_id = server.wait_for(_SERVING, START_TIMEOUT).group(3)

    def _spawn(self, name: str, args: list[str]) -> NodeProcess:
        popen = subprocess.Popen(
            [sys.executable, "-u", "-m", "app", "--log-level", "INFO", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", cwd=_repo_root(),
        )
        return NodeProcess(name, popen)

    def stop(self) -> None:
        for node in [*self.servers, *([self.bootstrap] if self.bootstrap else [])]:
            node.stop()
        self.servers, self.bootstrap = [], None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _repo_root() -> str:
    return str(Path(__file__).resolve().parent.parent)
