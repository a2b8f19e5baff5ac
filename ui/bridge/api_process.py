"""The app's "Local API" toggle: `corolla api` as a child process on this computer's swarm.

The API runs in its own process (the same command a user can run by hand), never inside the GUI;
it ends with the app: its stdin is a pipe the app holds, and closing it ends the process.
"""

from __future__ import annotations

import re

from PySide6.QtCore import QObject, QProcess, Signal, Slot

from corolla.app.serve import child

API_PORT = 8000
_READY = re.compile(r"on (http://\S+/v1)")


class ApiProcess(QObject):
    state_changed = Signal(str)  # what the menu shows: "off", "starting…", "on http://…/v1", "error: …"

    def __init__(self, parent: QObject | None = None, port: int = API_PORT) -> None:
        super().__init__(parent)
        self.port = port
        self.url = ""
        self.state = "off"
        self._process: QProcess | None = None
        self._tail: list[str] = []

    @Slot(list)
    def start(self, initial_peers: list[str]) -> None:
        if self._process is not None:
            return
        if not initial_peers:
            self._set("error: no swarm to answer requests (join one in Settings, or contribute)")
            return
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.readyReadStandardOutput.connect(self._read)
        proc.finished.connect(self._finished)
        self._process, self._tail, self.url = proc, [], ""
        self._set("starting…")
        program, *first = child.command()
        proc.start(program, [*first, "api", "--port", str(self.port), "--initial-peers", *initial_peers])

    @Slot()
    def stop(self, wait_ms: int = 0) -> None:
        proc, self._process = self._process, None
        if proc is not None:
            proc.finished.disconnect(self._finished)
            proc.closeWriteChannel()  # the child leaves when its stdin closes
            if wait_ms and not proc.waitForFinished(wait_ms):
                proc.kill()
                proc.waitForFinished(2000)
        self.url = ""
        self._set("off")

    def _read(self) -> None:
        if self._process is None:
            return
        for raw in bytes(self._process.readAllStandardOutput().data()).decode("utf-8", "replace").splitlines():
            self._tail = [*self._tail[-9:], raw]
            m = _READY.search(raw)
            if m and not self.url:
                self.url = m.group(1)
                self._set(f"on {self.url}")

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read()
        self._process = None
        why = next((line.split("error: ", 1)[1] for line in reversed(self._tail) if "error: " in line),
                   "the API server stopped unexpectedly; details are in its log")
        self._set(f"error: {why}")

    def _set(self, state: str) -> None:
        self.state = state
        self.state_changed.emit(state)
