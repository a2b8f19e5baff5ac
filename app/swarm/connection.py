"""This app's one connection to the swarm: a client peer (DHT client mode) and a SwarmClient.

Opened lazily on first use and shared by the chat's routes and the swarm view. The peer lives in
its own task in the network thread's nursery (its host and DHT own nurseries, which must be entered
and left by the same task); `aclose()` or the thread's stop ends it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from corolla.app.errors import ChatBackendError, corolla_error_in
from corolla.p2p.client import SwarmClient, open_client_peer
from corolla.p2p.reputation import Reputation

if TYPE_CHECKING:
    from corolla.core.model import ModelInfo

JOIN_TIMEOUT = 20.0  # s to reach the initial peers


class SwarmConnection:
    def __init__(self, initial_peers: list[str], model_path: Callable[[], Path],
                 nursery: Callable[[], trio.Nursery], swarm_key: str | None = None) -> None:
        self.initial_peers = list(initial_peers)
        self.swarm_key = swarm_key  # a private swarm's key; None: the open swarm
        self._model_path = model_path
        self._nursery = nursery
        self._client: SwarmClient | None = None
        self._lock: trio.Lock | None = None
        self._closed: trio.Event | None = None
        self.model_name = ""
        self.num_blocks = 0

    async def client(self) -> SwarmClient:
        """The SwarmClient, connecting first if needed (ChatBackendError when the swarm is unreachable)."""
        if self._lock is None:
            self._lock = trio.Lock()
        async with self._lock:
            if self._client is None:
                if not self.initial_peers:
                    raise ChatBackendError(
                        "no swarm to join: add initial peers in Settings, tick Contribute GPU to start a swarm "
                        "here, or run `corolla demo`"
                    )
                from corolla.core.model import ModelInfo

                path = await trio.to_thread.run_sync(self._model_path)
                info = await trio.to_thread.run_sync(ModelInfo.load, path)
                self.model_name, self.num_blocks = info.name, info.num_blocks
                self._closed = trio.Event()
                try:
                    with trio.fail_after(JOIN_TIMEOUT):
                        await self._nursery().start(self._run, info, self._closed)
                except trio.TooSlowError:
                    self._closed.set()
                    raise ChatBackendError(
                        f"the swarm did not answer within {JOIN_TIMEOUT:.0f} s: is the network down, "
                        "or are the initial peers offline?"
                    ) from None
                except BaseException as exc:
                    self._closed.set()
                    known = corolla_error_in(exc)
                    if known is None:
                        raise
                    raise ChatBackendError(
                        f"cannot reach the swarm ({known}): is the network down, or are the initial "
                        "peers offline? Check them in Settings."
                    ) from None
            if self._client is None:
                raise ChatBackendError("the connection to the swarm closed")
            return self._client

    async def _run(self, info: ModelInfo, closed: trio.Event,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with open_client_peer(self.initial_peers, swarm_key=self.swarm_key) as peer:
                # liars caught by spot checks stay distrusted across runs
                self._client = SwarmClient(peer, info.name, info.hash, info.num_blocks,
                                           reputation=Reputation.default())
                task_status.started()
                await closed.wait()
        finally:
            self._client = None

    async def aclose(self) -> None:
        if self._closed is not None:
            self._closed.set()
