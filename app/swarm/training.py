"""The swarm as a training loop uses it: a client peer in a background trio thread, and the route
of servers as a differentiable module that the loop (in this thread) calls like a local one.

The loop stays in the caller's thread so that Ctrl-C lands there, between or inside steps, and the
command can save what it has; the peer's trio loop only answers requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Self

import trio

from corolla.app.errors import ChatBackendError, corolla_error_in
from corolla.core.model import ModelInfo
from corolla.p2p.client import SwarmClient, open_client_peer
from corolla.p2p.remote_blocks import RemoteBlocks, RemoteSequential, RetryEvent

JOIN_TIMEOUT = 30.0  # s to start the peer and reach the initial peers
FIRST_ROUTE_TIMEOUT = 60.0  # s to find servers for every block before training starts


class TrainingSwarm:
    """`with TrainingSwarm(peers, model) as swarm: swarm.module(hidden, deep)`; the peer ends on exit."""

    def __init__(self, initial_peers: list[str], model: ModelInfo,
                 on_retry: Callable[[RetryEvent], None] | None = None, host: str = "0.0.0.0") -> None:
        self.initial_peers, self.model, self.on_retry, self.host = list(initial_peers), model, on_retry, host
        self.module: RemoteSequential | None = None
        self.client: SwarmClient | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name="corolla-training-swarm", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(JOIN_TIMEOUT + FIRST_ROUTE_TIMEOUT):
            self.close()
            raise ChatBackendError(f"the swarm did not answer within {JOIN_TIMEOUT:.0f} s: are the initial peers "
                                   "online?")
        if self._error is not None:
            self._thread.join(5)
            known = corolla_error_in(self._error)
            raise ChatBackendError(f"cannot train through the swarm: {known or self._error}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._token is not None and self._stop is not None:
            try:
                self._token.run_sync_soon(self._stop.set)
            except trio.RunFinishedError:
                pass
        self._thread.join(10)

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token, self._stop = trio.lowlevel.current_trio_token(), trio.Event()
        async with open_client_peer(self.initial_peers, host=self.host) as peer:
            self.client = SwarmClient(peer, self.model.name, self.model.hash, self.model.num_blocks)
            blocks = RemoteBlocks(self.client, route_wait=FIRST_ROUTE_TIMEOUT, on_retry=self.on_retry)
            await blocks.route(0, self.model.num_blocks)  # every block is served before step 1
            self.module = RemoteSequential(blocks, self._token)
            self._ready.set()
            await self._stop.wait()
