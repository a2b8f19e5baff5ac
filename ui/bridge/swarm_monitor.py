"""Polls the swarm for the swarm view and the chat's route panel: every server announced for the model
that answers, and those that stopped answering within a short grace period."""

from __future__ import annotations

import trio
from PySide6.QtCore import QObject, QTimer, Signal, Slot

from corolla.app.errors import corolla_error_in
from corolla.app.swarm.connection import SwarmConnection
from corolla.app.swarm.snapshot import LEFT_GRACE_S, ServerMemory, SwarmSnapshot, reached_by
from corolla.core.errors import CorollaError
from corolla.ui.bridge.trio_thread import Job, TrioThread

REFRESH_MS = 5000  # each look asks the DHT about every block and every server: not too often
QUERY_TIMEOUT = 30.0  # s for one look at the swarm (a busy machine answers DHT lookups slowly)


class SwarmMonitor(QObject):
    snapshot = Signal(object)  # SwarmSnapshot

    def __init__(self, trio_thread: TrioThread, connection: SwarmConnection | None,
                 parent: QObject | None = None, *, grace_s: float = LEFT_GRACE_S, refresh_ms: int = REFRESH_MS) -> None:
        super().__init__(parent)
        self._trio = trio_thread
        self._connection = connection
        self._timer = QTimer(self)
        self._timer.setInterval(refresh_ms)
        self._timer.timeout.connect(self.refresh)
        self._job: Job | None = None
        self._grace_s = grace_s
        self._memory = ServerMemory(grace_s)
        self._watchers: set[int] = set()
        self.last: SwarmSnapshot | None = None

    def set_connection(self, connection: SwarmConnection | None) -> None:
        """Look at another swarm from now on (the settings changed)."""
        self._connection = connection
        self._memory = ServerMemory(self._grace_s)
        self.last = None

    def watch(self, owner: QObject) -> None:
        """Refresh while `owner` (a window) wants it; see `unwatch`."""
        self._watchers.add(id(owner))
        if not self._timer.isActive():
            self.start()

    def unwatch(self, owner: QObject) -> None:
        """`owner` no longer looks; the refreshes stop when nobody does."""
        self._watchers.discard(id(owner))
        if not self._watchers:
            self.stop()

    @Slot()
    def start(self) -> None:
        """Refresh now and then every REFRESH_MS until `stop()`."""
        self.refresh()
        self._timer.start()

    @Slot()
    def stop(self) -> None:
        self._timer.stop()

    @Slot()
    def refresh(self) -> None:
        if self._job is not None:
            return  # the previous look has not finished
        if self._connection is None:
            self._emit(SwarmSnapshot("", 0, error="not connected to a swarm: add initial peers in Settings"))
            return
        self._job = self._trio.spawn(self._look, on_done=self._answered, on_error=self._failed)

    async def _look(self) -> SwarmSnapshot:
        connection = self._connection
        if connection is None:
            raise CorollaError("not connected to a swarm")
        with trio.fail_after(QUERY_TIMEOUT):
            client = await connection.client()
            live, _ = await client.all_servers()  # the silent ones: announced, never seen answering
        return SwarmSnapshot(connection.model_name, connection.num_blocks, live, paths=reached_by(client.peer, live))

    def _answered(self, snapshot: SwarmSnapshot) -> None:
        left = self._memory.left(snapshot.servers)
        self._emit(SwarmSnapshot(snapshot.model, snapshot.num_blocks, snapshot.servers, left, paths=snapshot.paths))

    def _emit(self, snapshot: SwarmSnapshot) -> None:
        self._job = None
        self.last = snapshot
        self.snapshot.emit(snapshot)

    def _failed(self, exc: BaseException) -> None:
        known = corolla_error_in(exc)
        why = str(known) if known is not None else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, trio.TooSlowError):
            why = f"the swarm did not answer within {QUERY_TIMEOUT:.0f} s"
        previous = self.last
        if previous is None:
            self._emit(SwarmSnapshot("", 0, [], error=why))
        else:  # keep showing the last answer, marked as stale
            self._emit(SwarmSnapshot(previous.model, previous.num_blocks, previous.servers, previous.left, error=why,
                                     paths=previous.paths))
