"""A trio event loop in its own thread, and the bridge that brings its results to the Qt thread.

Qt's thread calls `TrioThread.spawn(async_fn, ...)`; the task runs in the loop's nursery and its
result or error comes back through a queued Qt signal, so callbacks always run in the thread that
created the `TrioThread` (the GUI thread). Trio-side code reaches the GUI only through `post()`.
Guest mode was measured to freeze the GUI for 200+ ms when a task blocked, hence a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from PySide6.QtCore import QObject, Signal, Slot

from corolla.core.errors import CorollaError


class TrioThreadError(CorollaError):
    """The trio thread is not running (not started yet, or already stopped)."""


class _Bridge(QObject):
    """Lives in the GUI thread; emitting `call` from any thread runs the callable here."""

    call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(self._run)

    @Slot(object)
    def _run(self, fn: Callable[[], None]) -> None:
        fn()


class Job:
    """One task running in the trio thread; `cancel()` may be called from the GUI thread."""

    def __init__(self, owner: TrioThread) -> None:
        self._owner = owner
        self._scope: trio.CancelScope | None = None
        self._cancelled = False
        self.done = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True
        self._owner.run_sync_soon(self._cancel_in_trio)

    def _cancel_in_trio(self) -> None:
        if self._scope is not None:
            self._scope.cancel()


class TrioThread:
    """Owns the trio loop thread. `start()` before use; `stop()` cancels every task and joins."""

    def __init__(self, name: str = "corolla-trio") -> None:
        self._name = name
        self._bridge = _Bridge()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self.crash: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._token is not None

    @property
    def nursery(self) -> trio.Nursery:
        """The loop's nursery, for tasks that outlive the call that starts them (use in the trio thread)."""
        if self._nursery is None:
            raise TrioThreadError("the network thread is not running")
        return self._nursery

    def start(self, timeout: float = 10.0) -> TrioThread:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TrioThreadError("the trio thread did not start")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel every task, end the loop and wait for the thread (at most `timeout` seconds)."""
        if self._thread is None:
            return
        if self._token is not None and self._nursery is not None:
            nursery = self._nursery
            try:
                self._token.run_sync_soon(nursery.cancel_scope.cancel)
            except trio.RunFinishedError:
                pass
        self._thread.join(timeout)
        self._thread = None
        self._token = None

    def run_sync_soon(self, fn: Callable[[], Any]) -> None:
        """Run a quick, non-blocking function in the trio thread."""
        if self._token is None:
            raise TrioThreadError("the network thread is not running")
        try:
            self._token.run_sync_soon(fn)
        except trio.RunFinishedError:
            raise TrioThreadError("the network thread has stopped") from None

    def post(self, fn: Callable[[], None]) -> None:
        """From any thread: run `fn` in the GUI thread (queued)."""
        self._bridge.call.emit(fn)

    def spawn(
        self,
        async_fn: Callable[..., Awaitable[Any]],
        *args: Any,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
    ) -> Job:
        """Start `async_fn(*args)` in the trio nursery; callbacks run in the GUI thread."""
        job = Job(self)

        async def runner() -> None:
            try:
                with trio.CancelScope() as scope:
                    job._scope = scope
                    if job._cancelled:
                        scope.cancel()
                    result = await async_fn(*args)
                    if on_done is not None:
                        self.post(lambda: on_done(result))
                    return
                if on_cancelled is not None:
                    self.post(on_cancelled)
            except Exception as exc:  # noqa: BLE001 - reported to the GUI, which shows it
                if on_error is not None:
                    self.post(lambda err=exc: on_error(err))
            finally:
                job.done.set()

        nursery = self._nursery
        if nursery is None:
            raise TrioThreadError("the network thread is not running")
        self.run_sync_soon(lambda: nursery.start_soon(runner))
        return job

    def _main(self) -> None:
        try:
            trio.run(self._root)
        except BaseException as exc:  # noqa: BLE001 - kept for the owner to inspect
            self.crash = exc
        finally:
            self._token = None
            self._ready.set()

    async def _root(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await trio.sleep_forever()
