"""A greedy peer as its own process: `python -m tests.e2e.attacker MODE BOOTSTRAP_ADDR MODEL_PATH`.
MODE is "max sessions", "whole cache" or "long forwards". Prints one line "attacking: ..." once the
attack is under way, then keeps it up until killed."""

from __future__ import annotations

import sys

import torch
import trio

from corolla.core.model import ModelInfo
from corolla.p2p.client import SwarmClient, open_client_peer, open_stream
from corolla.p2p.errors import PeerUnavailableError
from corolla.p2p.records import FORWARD_PROTOCOL, INFERENCE_PROTOCOL
from corolla.p2p.wire import StreamGone, encode, read_message, write_message


async def hold_sessions(peer, server_id: str, max_length: int, streams: list) -> list[str]:
    """Open sessions until the server refuses; keep every stream open and never step."""
    for _ in range(32):
        stream = await open_stream(peer, server_id, INFERENCE_PROTOCOL, 10)
        await write_message(stream, encode({"type": "open", "max_length": max_length}), timeout=10)
        header, _ = await read_message(stream, idle_timeout=10, body_timeout=10)
        if header["type"] != "opened":
            await stream.close()
            return [str(header.get("code"))]
        streams.append(stream)
    return []


async def loop_forwards(peer, server_id: str, hidden: int, done: list) -> None:
    """Send 2048-token forward requests back to back, forever."""
    x = torch.randn(1, 2048, hidden)
    while True:
        try:
            stream = await open_stream(peer, server_id, FORWARD_PROTOCOL, 10)
        except PeerUnavailableError:
            continue
        try:
            await write_message(stream, encode({"type": "forward"}, [x]), timeout=60)
            header, _ = await read_message(stream, idle_timeout=120, body_timeout=60)
            done.append(header.get("code") or header["type"])
            print(f"forward reply: {done[-1]}", flush=True)
        except (StreamGone, trio.TooSlowError) as exc:
            print(f"forward failed: {type(exc).__name__}", flush=True)
        finally:
            with trio.move_on_after(1):
                await stream.close()


async def main(mode: str, bootstrap: str, path: str) -> None:
    model = ModelInfo.load(path)
    async with open_client_peer([bootstrap], host="127.0.0.1") as peer:
        (server,) = await SwarmClient(peer, model.name, model.hash, model.num_blocks).servers()
        streams: list = []
        async with trio.open_nursery() as nursery:
            if mode == "max sessions":
                refusals = await hold_sessions(peer, server.peer_id, 1, streams)
            elif mode == "whole cache":
                refusals = await hold_sessions(peer, server.peer_id, 8192, streams)
                refusals += await hold_sessions(peer, server.peer_id, 1024, streams)
            else:
                refusals = []
                for _ in range(2):
                    nursery.start_soon(loop_forwards, peer, server.peer_id, model.hidden_size, [])
                await trio.sleep(2.0)  # the first request is being computed
            print(f"attacking: holding {len(streams)} sessions; refused with {','.join(refusals)}", flush=True)
            await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:4])
