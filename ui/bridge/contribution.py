"""The "Contribute GPU" toggle's engine: starts and stops a real server process and follows its state.

The server is always a separate process (`corolla.app.serve.child serve --status-json ...`, started
by `child.command()`: the `corolla serve` command, which also stops when this app's end closes its
stdin), never inside the GUI. Its stdout is the status channel (app/serve/status.py), which drives
the `ContributionState`; its stderr is words for people, passed on for a log view.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal, Slot

from corolla.app.contribute.state import (
    ContributionState,
    Phase,
    apply_status,
    ended_words,
    saved_stats,
    server_arguments,
    stats_from_status,
)
from corolla.app.serve import child
from corolla.app.serve.status import Event, ServerStatus, StatusError
from corolla.app.settings import Settings

STOP_GRACE_MS = 15000  # the server drains open sessions (10 s by default), then is killed
SERVER_COMMAND = child.command()


class ContributionController(QObject):
    """Starts/stops the server process; emits `state_changed` on every change of state."""

    state_changed = Signal(object)  # ContributionState
    output = Signal(str)  # each line the server prints, for a log view
    stats_changed = Signal(object)  # ServedStats: this installation's server's totals, all runs

    def __init__(self, parent: QObject | None = None, command: list[str] | None = None) -> None:
        super().__init__(parent)
        self.command = list(command or SERVER_COMMAND)  # a program and its first arguments
        self._state = ContributionState()
        self.stats = saved_stats()  # shown before (and between) runs; the server reports newer totals
        self._process: QProcess | None = None
        self._status_buffer = b""
        self._log_buffer = b""
        self._stopping = False
        self._restart_with: Settings | None = None
        self._settings: Settings | None = None  # what the server runs with (to resume after a pause)
        self._pausing = ""  # why the server is being stopped for a pause
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
        self._settings, self._pausing = settings, ""
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.readyReadStandardOutput.connect(self._read_status)
        proc.readyReadStandardError.connect(self._read_log)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._error)
        self._process, self._status_buffer, self._log_buffer = proc, b"", b""
        self._stopping = False
        self._set(ContributionState(Phase.STARTING))
        proc.start(self.command[0], [*self.command[1:], *server_arguments(settings), "--status-json"])

    def restart(self, settings: Settings) -> None:
        """Serve with new settings: stop the running server (without blocking), then start again."""
        settings.validated()
        if self._process is None:
            self.start(settings)
            return
        self.stop()
        self._restart_with = settings

    def pause(self, reason: str) -> None:
        """Leave the swarm for now (open sessions move off first); `resume()` serves again."""
        if self._process is None or self._stopping:
            return
        self.stop()
        self._pausing = reason
        self._set(ContributionState(Phase.STOPPING, error=reason, peer_id=self._state.peer_id))

    def resume(self) -> None:
        """Serve again with the settings it had before the pause."""
        if self._state.phase is Phase.PAUSED and self._settings is not None:
            self.start(self._settings)

    @property
    def paused(self) -> bool:
        return self._state.phase is Phase.PAUSED or bool(self._pausing)

    @Slot()
    def stop(self) -> None:
        """Ask the server to stop; it is killed if it has not exited after STOP_GRACE_MS."""
        self._restart_with = None
        self._pausing = ""
        if self._process is None:
            if self._state.phase in (Phase.ERROR, Phase.PAUSED):
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
    def _read_status(self) -> None:
        if self._process is None:
            return
        self._status_buffer += bytes(self._process.readAllStandardOutput().data())
        *lines, self._status_buffer = self._status_buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                status = ServerStatus.from_line(line)
            except StatusError:
                self.output.emit(line)  # something else printed on stdout: show it, do not act on it
                continue
            if status.event is Event.STATS:
                self.stats = stats_from_status(status)
                self.stats_changed.emit(self.stats)
                continue
            if self._state.phase in (Phase.STARTING, Phase.SERVING):
                self._set(apply_status(self._state, status))
            elif status.message:
                self._state = apply_status(self._state, status)  # keep why, for when the process ends

    @Slot()
    def _read_log(self) -> None:
        if self._process is None:
            return
        self._log_buffer += bytes(self._process.readAllStandardError().data())
        *lines, self._log_buffer = self._log_buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.output.emit(line)

    @Slot(int, QProcess.ExitStatus)
    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read_status()
        self._read_log()
        self._kill_timer.stop()
        self._process = None
        if self._stopping:
            if self._pausing:
                self._set(ContributionState(Phase.PAUSED, error=self._pausing))
                self._pausing = ""
                return
            self._set(ContributionState())
            if self._restart_with is not None:
                settings, self._restart_with = self._restart_with, None
                self.start(settings)
            return
        crashed = status == QProcess.ExitStatus.CrashExit
        self._set(ContributionState(Phase.ERROR, error=ended_words(crashed, self._state.error)))

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
