"""Links between servers: a server measures its round trip to the servers holding the blocks right
after its span and advertises them (ServerInfo.next_rtt_ms), so that routing knows what a hidden
state pays going from one server straight to the next."""

from __future__ import annotations

import logging

import trio
from libp2p.peer.id import ID

from corolla.p2p.client import request_info
from corolla.p2p.discovery import find_block_servers
from corolla.p2p.errors import PeerUnavailableError, ProtocolError, RemoteError
from corolla.p2p.host import Peer
from corolla.p2p.records import MAX_LINKS

log = logging.getLogger(__name__)

PINGS = 3  # info requests per next server; the smallest time counts (the first one may dial)
PING_TIMEOUT = 5.0  # s for one answer, a relayed dial included


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
        best = None
        for _ in range(PINGS):
            try:
                info = await request_info(peer, pid, timeout=PING_TIMEOUT)
            except (PeerUnavailableError, RemoteError, ProtocolError) as exc:
                log.debug("link to %s not measured: %s", pid, exc)
                return
            if info.model_name != model_name or info.model_hash != model_hash or not info.start <= end < info.end:
                return  # an old record: it serves other blocks now
            best = info.rtt_ms if best is None else min(best, info.rtt_ms)
        if best is not None:
            links[pid.to_string()] = round(best, 2)

    async with trio.open_nursery() as nursery:
        for pid in ids:
            nursery.start_soon(measure, pid)
    return links
