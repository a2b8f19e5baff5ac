"""A server that returns wrong activations, as its own process:
`python -m tests.e2e.liar MODE HONEST_STEPS BOOTSTRAP_ADDR MODEL_PATH`. It holds every block, claims
to be the fastest, answers each session's first HONEST_STEPS steps honestly and then with MODE
("random", "zero" or "scaled": tests/hostile.py:LIES); every forward request it answers wrongly.
Prints "lying as PEER_ID" once announced, then serves until killed or its stdin closes."""

from __future__ import annotations

import os
import sys
import threading

import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from corolla.core.model import ModelInfo
from corolla.core.span import Span
from corolla.p2p.discovery import announce
from corolla.p2p.host import open_peer
from corolla.p2p.server import ServerNode
from tests.hostile import LIES, make_liar


async def serve(mode: str, honest_steps: int, bootstrap: str, path: str) -> None:
    model = ModelInfo.load(path)
    node = ServerNode(Span.load(path, 0, model.num_blocks), model.name, model.hash)
    node.measure_throughput()  # warms the blocks up, as `corolla serve` does: a cold first step is slow
    make_liar(node, LIES[mode], honest_steps)
    async with open_peer(create_new_key_pair(), host="127.0.0.1", initial_peers=[bootstrap]) as peer:
        node.attach(peer.host)
        while True:  # announced again and again, like a real server (records expire)
            await announce(peer, model.name, model.hash, node.blocks)
            print(f"lying as {peer.peer_id}", flush=True)
            await trio.sleep(3.0)


def main() -> None:
    mode, honest_steps, bootstrap, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

    def watch_parent() -> None:  # the test ends us by closing our stdin
        while os.read(0, 1):
            pass
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    trio.run(serve, mode, honest_steps, bootstrap, path)


if __name__ == "__main__":
    main()
