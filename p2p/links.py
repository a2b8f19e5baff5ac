"""Links between servers: a server measures its round trip to the servers holding the blocks right
after its span, and the throughput of a prefill-sized transfer to them, and advertises both
(ServerInfo.next_rtt_ms, next_mbps), so that routing knows what a hidden state pays going from one
server straight to the next: round trips for one-token steps, throughput for long prompts and replays.

Throughput is probed (PROBE_PROTOCOL): the server sends PROBE_BYTES on a fresh stream and the next
server answers once it has read them all; the time, less one round trip, is what moving that many
bytes costs on the link, slow start, flow-control windows and relays included (what a real transfer
of that size pays after a pause). Probes are bounded: at most PROBES_PER_LOOK links per look, each
again only after PROBE_TTL_S, so a volunteer's upload is not spent on measuring it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time

import torch
import trio
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import MuxedStreamError

from corolla.p2p.client import open_stream, request_info
from corolla.p2p.discovery import find_block_servers
from corolla.p2p.errors import PeerUnavailableError, ProtocolError, RemoteError
from corolla.p2p.fairness import PeerLimitError
from corolla.p2p.host import Peer
from corolla.p2p.names import short_id
from corolla.p2p.records import MAX_LINK_MBPS, MAX_LINKS, MIN_LINK_MBPS, PROBE_PROTOCOL
from corolla.p2p.wire import StreamGone, WireLimits, close_stream, encode, read_message, write_message

log = logging.getLogger(__name__)

PINGS = 8  # round trips per next server, on one stream; the smallest counts (least CPU wait in it)
PING_TIMEOUT = 5.0  # s for the info answer (a relayed dial included) and then for each ping
PING_PROTOCOL = "/ipfs/ping/1.0.0"  # every py-libp2p host answers it: 32 bytes echoed
PING_BYTES = 32
PROBE_BYTES = 256 * 1024  # about a 64-token prefill of a 2048-wide float16 model
PROBE_MAX_BYTES = 1024 * 1024  # what a server reads of one probe
PROBE_TIMEOUT = 10.0  # s for a probe to cross and be answered (80 kbit/s would need 26 s)
PROBES_PER_LOOK = 4  # links probed per look at the next servers, those not probed for longest first
PROBE_TTL_S = 600.0  # s a throughput stays good before it is probed again
PROBES_SERVED = 4  # probes a server reads at once; more are refused
PROBE_LIMITS = WireLimits(max_header_bytes=1024, max_tensors=1, max_rank=1, max_tensor_bytes=PROBE_MAX_BYTES,
                          max_payload_bytes=PROBE_MAX_BYTES)


class LinkMeter:
    """What a server knows of its links to the servers holding the next blocks: round trips (ms,
    every look) and throughput (Mbit/s, probed at most PROBES_PER_LOOK per look, PROBE_TTL_S apart)."""

    def __init__(self, probe_bytes: int = PROBE_BYTES) -> None:
        self.rtt_ms: dict[str, float] = {}
        self.mbps: dict[str, float] = {}
        self.probe_bytes = probe_bytes
        self._probed_at: dict[str, float] = {}

    async def look(self, peer: Peer, model_name: str, model_hash: str, end: int, num_blocks: int) -> None:
        rtts = await measure_next_links(peer, model_name, model_hash, end, num_blocks)
        now = time.monotonic()
        due = sorted((pid for pid in rtts if now - self._probed_at.get(pid, -PROBE_TTL_S) >= PROBE_TTL_S),
                     key=lambda pid: self._probed_at.get(pid, -PROBE_TTL_S))[:PROBES_PER_LOOK]
        mbps = {pid: v for pid, v in self.mbps.items() if pid in rtts}  # gone servers are forgotten

        for pid in due:  # one after the other: probes at once would share this server's upload
            try:
                mbps[pid] = round(await probe_mbps(peer, ID.from_base58(pid), rtts[pid], self.probe_bytes), 2)
                self._probed_at[pid] = time.monotonic()
            except (PeerUnavailableError, ProtocolError, StreamGone, trio.TooSlowError) as exc:
                log.debug("throughput to %s not measured: %s", short_id(pid), exc)
        self.rtt_ms, self.mbps = rtts, mbps
        self._probed_at = {pid: t for pid, t in self._probed_at.items() if pid in rtts}


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


async def probe_mbps(peer: Peer, pid: ID, rtt_ms: float, nbytes: int = PROBE_BYTES) -> float:
    """Throughput (Mbit/s) of sending `nbytes` to `pid` on a fresh probe stream: the time until it
    says it has read them all, less one round trip (`rtt_ms`, measured before)."""
    data = os.urandom(max(nbytes // 2, 1) * 2)
    payload = torch.frombuffer(bytearray(data), dtype=torch.float16)
    stream = await open_stream(peer, pid, PROBE_PROTOCOL, PING_TIMEOUT)
    try:
        t0 = time.perf_counter()
        await write_message(stream, encode({"type": "probe"}, [payload]), timeout=PROBE_TIMEOUT)
        header, _ = await read_message(stream, idle_timeout=PROBE_TIMEOUT, body_timeout=PING_TIMEOUT)
        seconds = time.perf_counter() - t0
    finally:
        await close_stream(stream, timeout=0.5)
    # random bytes and their digest: a server cannot answer early to look fast
    if header.get("type") != "probed" or header.get("sha256") != hashlib.sha256(data).hexdigest():
        raise ProtocolError(f"{short_id(str(pid))} answered a probe with {str(header)[:80]}")
    return throughput_mbps(len(data), seconds, rtt_ms)


def throughput_mbps(nbytes: int, seconds: float, rtt_ms: float) -> float:
    """Mbit/s of a transfer of `nbytes` answered after `seconds` over a link of round trip `rtt_ms`,
    within what a server may advertise (at least 1 ms of transfer counts: a faster link is fast)."""
    transfer = max(seconds - rtt_ms / 1000, 1e-3)
    return min(max(8 * nbytes / transfer / 1e6, MIN_LINK_MBPS), MAX_LINK_MBPS)


class ProbeService:
    """The receiving end of throughput probes: read one probe (at most PROBE_MAX_BYTES), answer with the
    sha256 of its bytes. At most PROBES_SERVED at once, one per peer: a probe costs reading it."""

    def __init__(self) -> None:
        self.reading: set[str] = set()  # peers whose probe is being read

    async def serve(self, stream, peer: str) -> None:
        if peer in self.reading or len(self.reading) >= PROBES_SERVED:
            raise PeerLimitError(f"this server reads one probe per peer and at most {PROBES_SERVED} at once")
        self.reading.add(peer)
        try:
            header, tensors = await read_message(stream, limits=PROBE_LIMITS, idle_timeout=PING_TIMEOUT,
                                                 body_timeout=PROBE_TIMEOUT)
        finally:
            self.reading.discard(peer)
        if header.get("type") != "probe":
            raise ProtocolError(f"expected a 'probe' message, got {str(header.get('type'))[:40]!r}")
        digest = hashlib.sha256(b"".join(t.contiguous().view(torch.uint8).numpy().tobytes() for t in tensors))
        await write_message(stream, encode({"type": "probed", "sha256": digest.hexdigest()}), timeout=PING_TIMEOUT)
