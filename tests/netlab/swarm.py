"""A Corolla swarm inside the testbed: a bootstrap peer and servers as real processes, each on a host
of the lab (so behind its NAT, paying its link delays)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from corolla.app.demo.processes import ChildProcess, stop_all
from tests.netlab import Lab

REPO = Path(__file__).resolve().parents[2]


class LabProcess(ChildProcess):
    """`python -m corolla.app ARGS` on one host of the lab, output collected line by line. `ip netns
    exec` execs the command: signals reach the Corolla process itself."""

    def __init__(self, lab: Lab, host: str, name: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.host = host
        self.peer_id = ""
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        self.log_path = log_dir / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen(
            lab.command(host, [sys.executable, "-m", "corolla.app", *args]), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, text=True, encoding="utf-8",
            errors="replace", env=env, bufsize=1)
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()


class LabSwarm:
    """`with LabSwarm(lab, dir) as swarm: swarm.add_server('cone', '--blocks', '10:20')`."""

    def __init__(self, lab: Lab, work_dir: Path, announce_period: float = 3.0) -> None:
        self.lab = lab
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.announce_period = announce_period
        self.bootstrap: LabProcess | None = None
        self.bootstrap_addr = ""
        self.servers: list[LabProcess] = []
        self.report = ""  # what a test saw of the swarm, for the tests that follow
        self._port = 4100

    def __enter__(self) -> LabSwarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_bootstrap(self, host: str = "boot") -> str:
        self.bootstrap = LabProcess(self.lab, host, "bootstrap",
                                    ["bootstrap", "--port", "4000", "--identity", str(self.dir / "bootstrap.key")],
                                    self.dir)
        m = self.bootstrap.wait_for(r"bootstrap peer listening on (/ip4/\S+/tcp/4000/p2p/\S+)")
        self.bootstrap_addr = re.sub(r"/ip4/[\d.]+/", f"/ip4/{self.lab.ip(host)}/", m.group(1))
        return self.bootstrap_addr

    def start_server(self, host: str, *extra: str, name: str | None = None) -> LabProcess:
        """Start `corolla serve` on `host` (each server its own port and identity); do not wait."""
        if not self.bootstrap_addr:
            self.start_bootstrap()
        self._port += 1
        name = name or f"{host}-{self._port}"
        server = LabProcess(self.lab, host, name,
                            ["serve", "--port", str(self._port), "--identity", str(self.dir / f"{name}.key"),
                             "--initial-peers", self.bootstrap_addr, "--announce-period", str(self.announce_period),
                             *extra], self.dir)
        self.servers.append(server)
        return server

    def add_server(self, host: str, *extra: str, name: str | None = None) -> LabProcess:
        server = self.start_server(host, *extra, name=name)
        server.peer_id = server.wait_for(r"serving blocks? .* as (\S+);").group(1)
        return server

    def client(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `python -m corolla.app ARGS --initial-peers BOOTSTRAP` on the client host; wait for it."""
        return self.lab.run("client", [sys.executable, "-m", "corolla.app", *args, "--initial-peers",
                                       self.bootstrap_addr], cwd=REPO, timeout=600,
                            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})

    def stop(self) -> None:
        stop_all(self.servers, self.bootstrap)
