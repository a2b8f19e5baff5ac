"""A swarm of real processes on this machine (a bootstrap peer and servers), for demos, tests and
benchmarks. Every child is `corolla.app.serve.child` (the `corolla` command line, started with
`child.command()`), so it works wherever Python does and from the installed bundle, and it ends
with the process that started it: its stdin is a pipe held here, and a child whose stdin closes
(this process exited, crashed or was killed) leaves as on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

from corolla.app.serve.child import command as child_command
from corolla.core.errors import CorollaError

ADDR_RE = re.compile(r"(/ip4/127\.0\.0\.1/tcp/\d+/p2p/[1-9A-HJ-NP-Za-km-z]+)")
READY_TIMEOUT = 180.0  # s: a server on a busy 2-core machine may take a while to import and load


class LocalSwarmError(CorollaError):
    """A child process of a local swarm exited or did not become ready in time."""


class ChildProcess:
    """One `corolla` child whose output is collected line by line (stdout and stderr together)."""

    _leaving = False  # asked to leave already (once is enough: a second SIGTERM would cut its goodbye short)

    def __init__(self, name: str, args: list[str], log_dir: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.peer_id = ""  # set by whoever reads it from the "serving blocks ... as <peer>;" line
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        self.log_path = log_dir / f"{name}.log" if log_dir is not None else None  # None: kept in memory only
        # Servers on one machine take turns computing; busy-waiting OpenMP workers of an idle one
        # would steal the cores of the busy one.
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
        here = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [*child_command(), *args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
            cwd=here if here.is_dir() else None,  # a bundle keeps no source folders: its own cwd then
            text=True, encoding="utf-8", errors="replace", env=full_env, bufsize=1,
            creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
        )
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        stdout = self.proc.stdout
        if stdout is None:
            return
        log = open(self.log_path, "w", encoding="utf-8") if self.log_path is not None else None  # noqa: SIM115
        try:
            for line in stdout:
                if log is not None:
                    log.write(line)
                    log.flush()
                with self._new_line:
                    self.lines.append(line.rstrip("\n"))
                    self._new_line.notify_all()
        finally:
            if log is not None:
                log.close()
        with self._new_line:
            self._new_line.notify_all()

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = READY_TIMEOUT, start: int = 0) -> re.Match[str]:
        """The first output line (from line `start` on) matching `pattern`; raise if the child exits."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        with self._new_line:
            while True:
                for line in self.lines[seen:]:
                    m = regex.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise LocalSwarmError(f"{self.name} exited ({self.proc.returncode}) before printing "
                                          f"{pattern!r}:\n{self.output()[-3000:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LocalSwarmError(f"{self.name} did not print {pattern!r} within {timeout:.0f} s:\n"
                                          f"{self.output()[-3000:]}")
                self._new_line.wait(min(left, 0.5))

    def leave(self) -> None:
        """Ask the child to leave (its stdin closes, as when this process ends), once; do not wait."""
        if self.proc.poll() is None and not self._leaving:
            self._leaving = True
            try:
                if self.proc.stdin is None:
                    raise OSError("no pipe to the child's stdin")
                self.proc.stdin.close()
            except OSError:
                if sys.platform == "win32":
                    self.proc.send_signal(signal.CTRL_BREAK_EVENT)
                else:
                    self.proc.terminate()

    def stop(self, timeout: float = 15.0) -> int | None:
        """Ask the child to leave, kill it after `timeout` s; its exit code."""
        self.leave()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def stop_all(servers: list[ChildProcess], bootstrap: ChildProcess | None) -> None:
    """Stop servers together (each takes a second or two to leave), then the bootstrap peer they
    leave through."""
    for child in servers:
        child.leave()
    for child in servers:
        child.stop()
    if bootstrap is not None:
        bootstrap.stop()


class LocalSwarm:
    """A bootstrap peer plus servers on 127.0.0.1; `with LocalSwarm(dir) as swarm: swarm.add_server(...)`."""

    def __init__(self, work_dir: Path, model: str = "default", announce_period: float = 5.0) -> None:
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.announce_period = announce_period
        self.bootstrap: ChildProcess | None = None
        self.bootstrap_addr = ""
        self.servers: list[ChildProcess] = []

    def __enter__(self) -> Self:
        self.start_bootstrap()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_bootstrap(self) -> str:
        self.bootstrap = ChildProcess("bootstrap", ["bootstrap", "--host", "127.0.0.1",
                                                    "--identity", str(self.dir / "bootstrap.key")], self.dir)
        self.bootstrap_addr = self.bootstrap.wait_for(ADDR_RE.pattern).group(1)
        return self.bootstrap_addr

    def start_server(self, *extra: str, name: str | None = None) -> ChildProcess:
        """Start `corolla serve` with `extra` arguments (e.g. "--blocks", "0:10"); not waited for."""
        name = name or f"server{len(self.servers)}"
        args = ["serve", "--model", self.model, "--host", "127.0.0.1", "--identity", str(self.dir / f"{name}.key"),
                "--initial-peers", self.bootstrap_addr, "--announce-period", str(self.announce_period), *extra]
        server = ChildProcess(name, args, self.dir)
        self.servers.append(server)
        return server

    def add_server(self, *extra: str, name: str | None = None) -> ChildProcess:
        """Start a server and wait until it serves."""
        server = self.start_server(*extra, name=name)
        server.wait_for(r"serving block")
        return server

    def stop(self) -> None:
        stop_all(self.servers, self.bootstrap)
