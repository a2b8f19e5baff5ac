"""Links between servers: a server measures its round trip to the servers holding the blocks right
after its span and advertises them (ServerInfo.next_rtt_ms), so that routing knows what a hidden
state pays going from one server straight to the next."""

from __future__ import annotations

import logging
import os
import time

import trio
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import MuxedStreamError

from corolla.p2p.client import open_stream, request_info
from corolla.p2p.discovery import find_block_servers
from corolla.p2p.errors import PeerUnavailableError, ProtocolError, RemoteError
from corolla.p2p.host import Peer
from corolla.p2p.names import short_id
from corolla.p2p.records import MAX_LINKS
from corolla.p2p.wire import StreamGone, close_stream

log = logging.getLogger(__name__)

PINGS = 8  # round trips per next server, on one stream; the smallest counts (least CPU wait in it)
PING_TIMEOUT = 5.0  # s for the info answer (a relayed dial included) and then for each ping
PING_PROTOCOL = "/ipfs/ping/1.0.0"  # every py-libp2p host answers it: 32 bytes echoed
PING_BYTES = 32


async def measure_next_links(peer: Peer, model_name: str, model_hash: str, end: int,
                             num_blocks: int) -> dict[str, float]:
    """Round trip (ms) to each live server of the model that holds block `end` (the first block
    after a span ending there), by peer id; empty after the last block or when nobody holds it."""
    if end >= num_blocks:
        return {}
    found = await find_block_servers(peer, model_name, model_hash, range(end, end + 1))
    ids = [pid for pid in found[end] if pid != peer.host.get_id()][:MAX_LINKS]
    links: dict[str, float] = {}

    async def measure(pid: ID) -> None:
        try:
            info = await request_info(peer, pid, timeout=PING_TIMEOUT)
            if info.model_name != model_name or info.model_hash != model_hash or not info.start <= end < info.end:
                return  # an old record: it serves other blocks now
            links[pid.to_string()] = round(await ping_ms(peer, pid), 2)
        except (PeerUnavailableError, RemoteError, ProtocolError, StreamGone, trio.TooSlowError) as exc:
            log.debug("link to %s not measured: %s", pid, exc)

    async with trio.open_nursery() as nursery:
        for pid in ids:
            nursery.start_soon(measure, pid)
    return links


async def ping_ms(peer: Peer, pid: ID, pings: int = PINGS) -> float:
    """The smallest of `pings` round trips (ms) of 32 bytes on one ping stream to a connected peer (an
    info request's time also counts opening the stream: extra round trips of protocol negotiation)."""
    stream = await open_stream(peer, pid, PING_PROTOCOL, PING_TIMEOUT)
    best = float("inf")
    try:
        for _ in range(pings):
            payload = os.urandom(PING_BYTES)
            t0 = time.perf_counter()
            with trio.fail_after(PING_TIMEOUT):
                await stream.write(payload)
                echo = b""
                while len(echo) < PING_BYTES:
                    chunk = await stream.read(PING_BYTES - len(echo))
                    if not chunk:
                        raise StreamGone(f"{short_id(str(pid))} closed the ping stream")
                    echo += chunk
            if echo != payload:
                raise ProtocolError(f"{short_id(str(pid))} answered a ping with other bytes")
            best = min(best, 1000 * (time.perf_counter() - t0))
    except (StreamError, MuxedStreamError, OSError) as exc:
        raise StreamGone(f"ping to {short_id(str(pid))}: {exc}") from None
    finally:
        await close_stream(stream, timeout=0.5)
    return best
