"""A real swarm on 127.0.0.1 for GUI tests: a bootstrap peer and servers of tiny models, each a libp2p
host with its own DHT, all running in one trio thread of the test (the app has its own)."""

from __future__ import annotations

from pathlib import Path

import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from corolla.core.model import ModelInfo
from corolla.core.span import Span
from corolla.p2p.discovery import announce
from corolla.p2p.host import open_peer
from corolla.p2p.server import ServerNode
from corolla.ui.bridge.trio_thread import TrioThread

HOST = "127.0.0.1"


class ThreadSwarm:
    def __init__(self) -> None:
        self.thread = TrioThread(name="test-swarm").start()
        self.bootstrap = self._call(self._start_bootstrap)
        self._scopes: dict[str, trio.CancelScope] = {}
        self.peer_ids: dict[str, str] = {}

    def _call(self, fn, *args):
        return trio.from_thread.run(fn, *args, trio_token=self.thread._token)

    async def _start_bootstrap(self) -> str:
        return await self.thread.nursery.start(self._bootstrap)

    async def _bootstrap(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with open_peer(create_new_key_pair(), host=HOST) as boot:
            task_status.started(boot.addrs[0])
            await trio.sleep_forever()

    def add(self, name: str, path: Path, start: int, end: int, nickname: str = "") -> str:
        """Serve blocks [start, end) of the model at `path`; its peer id."""
        model = ModelInfo.load(path)
        node = ServerNode(Span.load(path, start, end), model.name, model.hash)
        node.nickname, node.model_blocks = nickname, model.num_blocks

        async def begin() -> str:
            return await self.thread.nursery.start(self._serve, name, node)

        self.peer_ids[name] = self._call(begin)
        return self.peer_ids[name]

    async def _serve(self, name: str, node: ServerNode, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._scopes[name] = scope
            async with open_peer(create_new_key_pair(), host=HOST, initial_peers=[self.bootstrap]) as peer:
                node.attach(peer.host)
                await announce(peer, node.model_name, node.model_hash, node.blocks)
                task_status.started(node.peer_id)
                await trio.sleep_forever()

    def kill(self, name: str) -> None:
        """The server's host closes at once, as when its process dies."""
        self.thread.run_sync_soon(self._scopes[name].cancel)

    def close(self) -> None:
        self.thread.stop(timeout=10)
