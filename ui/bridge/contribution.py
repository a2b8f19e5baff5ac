"""The "Contribute GPU" toggle's engine: starts and stops a real server process and tracks its state.

The server is always a separate process (`sys.executable -m app.server_process serve ...`: the
`corolla serve` command, which also stops when this app's end closes its stdin), never inside the GUI.
Its output is read line by line and turned into a `ContributionState`:
off / starting / serving blocks A–B, N sessions / error and why.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal, Slot

from corolla.app.paths import data_dir
from corolla.app.settings import Settings, block_range

STOP_GRACE_MS = 15000  # the server drains open sessions (10 s by default), then is killed


class Phase(str, Enum):
    OFF = "off"
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"
    ERROR = "error"


@dataclass(frozen=True)
class ContributionState:
    phase: Phase = Phase.OFF
    start: int | None = None  # first block served
    end: int | None = None  # one past the last block served
    sessions: int = 0
    error: str = ""
    peer_id: str = ""
    join_address: str = ""  # set when the server started a new swarm: where others join it

    @property
    def active(self) -> bool:
        return self.phase in (Phase.STARTING, Phase.SERVING)

    def describe(self) -> str:
        """What the tray shows, e.g. "serving blocks 0–9, 2 sessions"."""
        if self.phase is Phase.SERVING and self.start is not None and self.end is not None:
            n = self.sessions
            return f"serving blocks {self.start}–{self.end - 1}, {n} session{'s' if n != 1 else ''}"
        if self.phase is Phase.STARTING and self.start is not None and self.end is not None:
            return f"starting (loading blocks {self.start}–{self.end - 1})…"
        if self.phase is Phase.ERROR:
            return f"error: {self.error}" if self.error else "error"
        return {Phase.OFF: "off", Phase.STARTING: "starting…", Phase.STOPPING: "stopping…"}.get(
            self.phase, self.phase.value
        )


# What the server prints, as recognised here. Each pattern is tried against every output line.
_SERVING = re.compile(r"serving\s+blocks?\s*\[?\s*(\d+)\s*(?::|-|–|,|\.\.)\s*(\d+)\s*([\])]?)", re.IGNORECASE)
_LOADING = re.compile(r"\bloading blocks (\d+):(\d+)", re.IGNORECASE)
# "session opened 1a2b3c4d blocks 0:10 max_length 300 (2 active)", "session closed 1a2b3c4d (1 active)"
_SESSIONS = re.compile(r"\bsession (?:opened|closed)\b.*\((\d+) active\)", re.IGNORECASE)
_PEER = re.compile(r"(?:\bas|peer(?: id)?:?)\s+((?:Qm|12D3)[1-9A-HJ-NP-Za-km-z]{20,})", re.IGNORECASE)
# "corolla: error: …", or the last line of a traceback, "p2p.errors.SwarmError: …" (even inside the
# "| " frame of an exception group); the group's own summary line says nothing and is skipped.
_ERROR = re.compile(r"(?:^corolla: error: |\b\w*(?:Error|Exception): )(.+)$")
_GROUP_SUMMARY = re.compile(r"Exceptions? from .*nursery|sub-exception", re.IGNORECASE)
_JOIN = re.compile(r"others join with: --initial-peers (\S+)")


def parse_line(line: str, state: ContributionState) -> ContributionState:
    """The state after the server printed `line` (unchanged if the line says nothing about state)."""
    m = _LOADING.search(line)
    if m and state.phase is Phase.STARTING:
        state = ContributionState(Phase.STARTING, int(m.group(1)), int(m.group(2)), peer_id=state.peer_id)
    m = _SERVING.search(line)
    if m:
        start, end = int(m.group(1)), int(m.group(2))
        if m.group(3) == "]":  # an inclusive range, "[0, 9]"
            end += 1
        state = dataclasses.replace(state, phase=Phase.SERVING, start=start, end=end, error="")
    m = _SESSIONS.search(line)
    if m and state.phase is Phase.SERVING:
        n = int(m.group(1))
        state = dataclasses.replace(state, sessions=n)
    m = _PEER.search(line)
    if m and not state.peer_id:
        state = dataclasses.replace(state, peer_id=m.group(1))
    m = _JOIN.search(line)
    if m:
        state = dataclasses.replace(state, join_address=m.group(1))
    return state


def identity_file() -> Path:
    """The contributed server's key: its peer id stays the same across restarts."""
    return data_dir() / "identity" / "server.key"


def server_arguments(settings: Settings, identity: Path | None = None) -> list[str]:
    """The `corolla serve` arguments for these settings."""
    args = ["serve", "--model", settings.model, "--port", str(settings.port),
            "--identity", str(identity or identity_file())]
    if settings.blocks:
        start, end = block_range(settings.blocks)
        args += ["--blocks", f"{start}:{end}"]
    else:
        args += ["--num-blocks", str(settings.num_blocks)]
    if settings.device != "auto":
        args += ["--device", settings.device]
    if settings.initial_peers:
        args += ["--initial-peers", *settings.initial_peers]
    return args


class ContributionController(QObject):
    """Starts/stops the server process; emits `state_changed` on every change of state."""

    state_changed = Signal(object)  # ContributionState
    output = Signal(str)  # each line the server prints, for a log view

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._state = ContributionState()
        self._process: QProcess | None = None
        self._buffer = b""
        self._last_error = ""
        self._tail: list[str] = []
        self._stopping = False
        self._restart_with: Settings | None = None
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)

    @property
    def state(self) -> ContributionState:
        return self._state

    @property
    def pid(self) -> int | None:
        return int(self._process.processId()) if self._process is not None else None

    @Slot(object)
    def start(self, settings: Settings) -> None:
        """Start serving with `settings` (a no-op if already running; after the stop if stopping)."""
        if self._process is not None:
            if self._stopping:
                self._restart_with = settings.validated()
            return
        settings.validated()
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.readyReadStandardOutput.connect(self._read)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._error)
        self._process, self._buffer, self._last_error, self._tail = proc, b"", "", []
        self._stopping = False
        self._set(ContributionState(Phase.STARTING))
        proc.start(sys.executable, ["-m", "corolla.app.serve.child", *server_arguments(settings)])

    def restart(self, settings: Settings) -> None:
        """Serve with new settings: stop the running server (without blocking), then start again."""
        settings.validated()
        if self._process is None:
            self.start(settings)
            return
        self.stop()
        self._restart_with = settings

    @Slot()
    def stop(self) -> None:
        """Ask the server to stop; it is killed if it has not exited after STOP_GRACE_MS."""
        self._restart_with = None
        if self._process is None:
            if self._state.phase is Phase.ERROR:
                self._set(ContributionState())
            return
        self._stopping = True
        self._set(ContributionState(Phase.STOPPING, peer_id=self._state.peer_id))
        # End of its stdin asks the server to leave (app/server_process.py): the same on every OS,
        # where terminate() would be SIGTERM on Unix and a WM_CLOSE that console programs ignore on Windows.
        self._process.closeWriteChannel()
        self._kill_timer.start(STOP_GRACE_MS)

    def shutdown(self, timeout_ms: int = STOP_GRACE_MS + 1000) -> None:
        """Stop and wait (app exit): the server never outlives the app."""
        self._restart_with = None
        proc = self._process
        if proc is None:
            return
        self.stop()
        if not proc.waitForFinished(timeout_ms):
            proc.kill()
            proc.waitForFinished(2000)

    def _set(self, state: ContributionState) -> None:
        if state != self._state:
            self._state = state
            self.state_changed.emit(state)

    @Slot()
    def _read(self) -> None:
        if self._process is None:
            return
        self._buffer += bytes(self._process.readAllStandardOutput().data())
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self.output.emit(line)
            self._tail = [*self._tail[-19:], line]
            m = _ERROR.search(line)
            if m and not _GROUP_SUMMARY.search(line):
                self._last_error = m.group(1).strip()
            if self._state.phase in (Phase.STARTING, Phase.SERVING):
                self._set(parse_line(line, self._state))

    @Slot(int, QProcess.ExitStatus)
    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read()
        self._kill_timer.stop()
        self._process = None
        if self._stopping:
            self._set(ContributionState())
            if self._restart_with is not None:
                settings, self._restart_with = self._restart_with, None
                self.start(settings)
            return
        why = self._last_error or (self._tail[-1] if self._tail else "")
        self._set(ContributionState(Phase.ERROR, error=f"server exited (code {code}){': ' + why if why else ''}"))

    @Slot(QProcess.ProcessError)
    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and self._process is not None:
            why = self._process.errorString()
            self._process = None
            self._set(ContributionState(Phase.ERROR, error=f"could not start the server: {why}"))

    @Slot()
    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
