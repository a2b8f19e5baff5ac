"""Finding servers through the DHT: servers announce one provider record per block; clients look
them up per block. The DHT only says who *might* serve a block: py-libp2p keeps provider records for
48 h and cannot withdraw them, so liveness is always confirmed by asking the server itself."""

from __future__ import annotations

import logging

import trio
from libp2p.kad_dht.kad_dht import DHTMode, _encode_key
from libp2p.peer.id import ID

from corolla.p2p.host import Peer
from corolla.p2p.records import BlockRange, block_key, directory_key, model_key

log = logging.getLogger(__name__)
LOOKUP_TIMEOUT = 5.0
ANNOUNCE_TIMEOUT = 10.0
LOOKUPS_AT_ONCE = 4


async def announce(peer: Peer, model_name: str, model_hash: str, blocks: BlockRange) -> int:
    """Provide one record per block; return how many were accepted by at least one other peer.

    One block at a time: many provides at once open so many streams that py-libp2p peers start
    failing stream negotiation (measured: 10 at once across 3 peers)."""
    ok = 0
    keys = [model_key(model_name, model_hash), directory_key()] + [block_key(model_name, model_hash, b)
                                                  for b in range(blocks.start, blocks.end)]
    for key in keys:
        with trio.move_on_after(ANNOUNCE_TIMEOUT):
            if await peer.dht.provide(key):
                ok += 1
    return ok


async def find_model_servers(peer: Peer, model_name: str, model_hash: str) -> set[ID]:
    """Peer ids that announced serving any block of the model (at most about 20: see model_key)."""
    return await _providers(peer, model_key(model_name, model_hash))


async def find_any_servers(peer: Peer) -> set[ID]:
    """Peer ids that announced serving any model (the directory key; at most about 20 per DHT peer
    asked, so a large swarm shows a sample of its servers: enough to list its models)."""
    return await _providers(peer, directory_key())


async def find_block_servers(peer: Peer, model_name: str, model_hash: str,
                             blocks: range) -> dict[int, set[ID]]:
    """Peer ids that announced each block, deduplicated, looked up on the network a few at a time."""
    found: dict[int, set[ID]] = {b: set() for b in blocks}
    limiter = trio.CapacityLimiter(LOOKUPS_AT_ONCE)

    async def one(block: int) -> None:
        async with limiter:
            found[block] = await _providers(peer, block_key(model_name, model_hash, block))

    async with trio.open_nursery() as nursery:
        for b in blocks:
            nursery.start_soon(one, b)
    return found


async def _providers(peer: Peer, key: str) -> set[ID]:
    found: set[ID] = set()
    if peer.dht.mode == DHTMode.CLIENT:
        # find_providers answers from the local store when it has anything, which would freeze a
        # client's first answer forever: forget it so the lookup goes to the network. (A DHT
        # server's store holds what others announced to it, so it must keep it.)
        peer.dht.provider_store.providers.pop(_encode_key(key), None)
    with trio.move_on_after(LOOKUP_TIMEOUT):
        for info in await peer.dht.find_providers(key, count=50):
            if info.peer_id != peer.host.get_id():
                if info.addrs:
                    peer.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 600)
                found.add(info.peer_id)
    return found
