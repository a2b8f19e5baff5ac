"""Looks up the models the swarm serves, and this computer's copies of them, for the model selector."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio
from PySide6.QtCore import QObject, Signal, Slot

from corolla.app.errors import corolla_error_in
from corolla.app.swarm.catalog import SwarmModel, local_copies, model_folders, swarm_models
from corolla.app.swarm.connection import SwarmConnection
from corolla.ui.bridge.trio_thread import Job, TrioThread

QUERY_TIMEOUT = 30.0  # s for one look (DHT lookup, then every server's info)


class ModelCatalog(QObject):
    models = Signal(list)  # list[SwarmModel]
    failed = Signal(str)  # why the swarm could not be asked, for people

    def __init__(self, trio_thread: TrioThread, connection: Callable[[], SwarmConnection | None],
                 configured: Callable[[], list[str]], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._trio = trio_thread
        self._connection = connection
        self._configured = configured  # model names from the settings: 'default', folders
        self._job: Job | None = None
        self.last: list[SwarmModel] = []
        self.copies: dict[tuple[str, str], Path] = {}  # (name, hash) -> a folder here

    @Slot()
    def refresh(self) -> None:
        """Ask the swarm now (emits `models` or `failed`)."""
        if self._job is not None:
            return
        connection = self._connection()
        if connection is None:
            self.failed.emit("not connected to a swarm: add initial peers in Settings")
            return
        configured = list(self._configured())

        async def look() -> tuple[list[SwarmModel], dict[tuple[str, str], Path]]:
            with trio.fail_after(QUERY_TIMEOUT):
                client = await connection.client()
                found = await swarm_models(client.peer)
            copies = await trio.to_thread.run_sync(lambda: local_copies(model_folders(configured)))
            return found, copies

        self._job = self._trio.spawn(look, on_done=self._found, on_error=self._failed)

    def _found(self, result: tuple[list[SwarmModel], dict[tuple[str, str], Path]]) -> None:
        self._job = None
        self.last, self.copies = result
        self.models.emit(self.last)

    def _failed(self, exc: BaseException) -> None:
        self._job = None
        known = corolla_error_in(exc)
        if isinstance(exc, trio.TooSlowError):
            self.failed.emit(f"the swarm did not answer within {QUERY_TIMEOUT:.0f} s")
        else:
            self.failed.emit(str(known) if known is not None else f"{type(exc).__name__}: {exc}")
