"""The client's view of the swarm: who serves which blocks, confirmed by asking each server."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from corolla.p2p.discovery import find_block_servers, find_model_servers
from corolla.p2p.errors import PeerUnavailableError, ProtocolError, RemoteError
from corolla.p2p.host import Peer, open_peer
from corolla.p2p.names import short_id
from corolla.p2p.records import INFO_PROTOCOL, ServerInfo
from corolla.p2p.reputation import Reputation
from corolla.p2p.wire import StreamGone, close_stream, encode, read_message, write_message

log = logging.getLogger(__name__)

INFO_TIMEOUT = 2.0  # s for a server to answer the info protocol, connection included
INFO_TTL = 3.0  # s an answer stays good; a dead server drops out of routing within this
BAN_FIRST_S = 5.0
REDISCOVER_S = 30.0  # s between DHT lookups of a client that keeps routing
BAN_MAX_S = 300.0


async def open_stream(peer: Peer, peer_id: str | ID, protocol: str, timeout: float):
    """A new stream to `peer_id`, dialing it if needed; PeerUnavailableError when that fails."""
    pid = peer_id if isinstance(peer_id, ID) else ID.from_base58(peer_id)
    try:
        with trio.fail_after(timeout):
            return await peer.host.new_stream(pid, [protocol])
    except trio.TooSlowError:
        raise PeerUnavailableError(str(pid), f"no answer within {timeout:.1f} s") from None
    except Exception as exc:  # noqa: BLE001 - dial and negotiation fail in many library-specific ways
        raise PeerUnavailableError(str(pid), f"{type(exc).__name__}: {exc}") from None


async def one_request(peer, peer_id, protocol: str, frame: bytes, timeout: float,
                      connect_timeout: float | None = None) -> tuple[dict, list]:
    """Send one request on a fresh stream and read its one reply; the stream is closed after.

    Raises what opening, writing and reading raise (PeerUnavailableError, StreamGone, TooSlowError,
    ProtocolError): each caller says what the failure means for it."""
    stream = await open_stream(peer, peer_id, protocol, timeout if connect_timeout is None else connect_timeout)
    try:
        await write_message(stream, frame, timeout=timeout)
        return await read_message(stream, idle_timeout=timeout, body_timeout=timeout)
    finally:
        await close_stream(stream, timeout=0.5)


async def request_info(peer: Peer, peer_id: str | ID, timeout: float = INFO_TIMEOUT) -> ServerInfo:
    """Ask one server about itself; the reply time (connection included) is its rtt_ms."""
    t0 = time.perf_counter()
    try:
        header, _ = await one_request(peer, peer_id, INFO_PROTOCOL, encode({"type": "info"}), timeout)
    except (StreamGone, trio.TooSlowError) as exc:
        raise PeerUnavailableError(str(peer_id), f"info: {exc or type(exc).__name__}") from None
    if header.get("type") == "error":
        raise RemoteError(str(header.get("code"))[:64], str(header.get("message"))[:300])
    info = ServerInfo.from_wire(header.get("info"))
    if info.peer_id != str(peer_id):
        raise ProtocolError(f"server {short_id(peer_id)} claims to be {short_id(info.peer_id)}")
    info.rtt_ms = 1000 * (time.perf_counter() - t0)
    return info


class PeerBans:
    """Peers that failed recently, each banned for a time that doubles with every failure."""

    def __init__(self, first_s: float = BAN_FIRST_S, max_s: float = BAN_MAX_S) -> None:
        self.first_s, self.max_s = first_s, max_s
        self._until: dict[str, float] = {}
        self._strikes: dict[str, int] = {}

    def ban(self, peer_id: str) -> float:
        strikes = self._strikes.get(peer_id, 0) + 1
        self._strikes[peer_id] = strikes
        seconds = min(self.first_s * 2 ** (strikes - 1), self.max_s)
        self._until[peer_id] = time.monotonic() + seconds
        return seconds

    def banned(self, peer_id: str) -> bool:
        return self._until.get(peer_id, 0.0) > time.monotonic()


class SwarmClient:
    """Discovery and liveness for one model: servers found in the DHT and confirmed by info.

    Peer ids found in the DHT are kept for `rediscover_s`; in between, a refresh only asks the known,
    unbanned servers for their info. That keeps failover fast: a DHT lookup that meets a hung peer
    waits for py-libp2p's 10 s query timeout, and a banned peer is also dropped from the routing
    table so that later lookups do not ask it."""

    def __init__(self, peer: Peer, model_name: str, model_hash: str, num_blocks: int,
                 info_ttl: float = INFO_TTL, rediscover_s: float = REDISCOVER_S,
                 reputation: Reputation | None = None) -> None:
        self.peer = peer
        self.reputation = reputation or Reputation()
        self.model_name, self.model_hash, self.num_blocks = model_name, model_hash, num_blocks
        self.info_ttl, self.rediscover_s = info_ttl, rediscover_s
        self.bans = PeerBans()
        self._known: set[ID] = set()
        self._discovered_at = -1e9
        self._cache: list[ServerInfo] = []
        self._full_until: dict[str, float] = {}
        self._observed_ms: dict[str, float] = {}  # per peer: ms per block seen on its 1-token steps
        self._cached_at = -1e9
        self._lock = trio.Lock()

    async def servers(self, *, fresh: bool = False, rediscover: bool = False) -> list[ServerInfo]:
        """Live servers of this model (same name and hash), not banned. Info answers are reused for
        `info_ttl` s unless `fresh`; the DHT is asked again when `rediscover` or every `rediscover_s` s."""
        async with self._lock:
            now = time.monotonic()
            if rediscover or not self._known or now - self._discovered_at > self.rediscover_s:
                await self._discover()
                fresh = True
            if fresh or now - self._cached_at > self.info_ttl:
                asked = [pid for pid in self._known if not self.bans.banned(pid.to_string())]
                live, _ = await self._ask(asked)
                self._cache = live
                self._cached_at = time.monotonic()
        now = time.monotonic()
        out = []
        for s in self._cache:
            if self.bans.banned(s.peer_id) or self.reputation.distrusted(s.peer_id):
                continue
            if self._full_until.get(s.peer_id, 0.0) > now:
                s = replace(s, free_cache_tokens=0)
            if self._observed_ms.get(s.peer_id, 0.0) > s.block_ms:  # it claims to be faster than it is
                s = replace(s, block_ms=self._observed_ms[s.peer_id])
            out.append(s)
        return out

    def observe_step(self, peer_id: str, step_ms: float, num_blocks: int, rtt_ms: float) -> None:
        """Record a 1-token step's round trip (ms): routing then uses what the server does, not what it
        says (a server advertising a tiny block_ms would otherwise draw every route)."""
        per_block = max(step_ms - rtt_ms, 0.0) / max(num_blocks, 1)
        old = self._observed_ms.get(peer_id)
        self._observed_ms[peer_id] = per_block if old is None else 0.8 * old + 0.2 * per_block

    def note_full(self, peer_id: str) -> None:
        """A server refused a session because it is full: route as if it had no room for a while."""
        self._full_until[peer_id] = time.monotonic() + max(self.info_ttl, 1.0)

    async def _discover(self) -> None:
        """One lookup of the model's key, then per-block lookups only for blocks nobody answered for."""
        self._known = await find_model_servers(self.peer, self.model_name, self.model_hash)
        live, _ = await self._ask(self._known)
        missing = [b for b in range(self.num_blocks) if not any(s.start <= b < s.end for s in live)]
        if missing:
            found = await find_block_servers(self.peer, self.model_name, self.model_hash, missing)
            self._known |= {pid for peers in found.values() for pid in peers}
        self._discovered_at = time.monotonic()

    def ban(self, peer_id: str) -> float:
        """Ban a failed peer (seconds returned) and forget it in the DHT routing table."""
        seconds = self.bans.ban(peer_id)
        try:
            self.peer.dht.routing_table.remove_peer(ID.from_base58(peer_id))
        except (ValueError, KeyError) as exc:
            log.debug("routing table: %s", exc)
        self._cache = [s for s in self._cache if s.peer_id != peer_id]
        return seconds

    async def all_servers(self) -> tuple[list[ServerInfo], list[str]]:
        """Every announced server, looked up now: those that answered, and the peer ids that did not."""
        found = await find_block_servers(self.peer, self.model_name, self.model_hash, range(self.num_blocks))
        ids = {pid for peers in found.values() for pid in peers}
        return await self._ask(ids | await find_model_servers(self.peer, self.model_name, self.model_hash))

    async def _ask(self, ids) -> tuple[list[ServerInfo], list[str]]:
        answers: dict[ID, ServerInfo | None] = {}

        async def ask(pid: ID) -> None:
            try:
                answers[pid] = await request_info(self.peer, pid)
            except (PeerUnavailableError, RemoteError, ProtocolError) as exc:
                log.debug("server %s did not answer: %s", pid, exc)
                answers[pid] = None

        async with trio.open_nursery() as nursery:
            for pid in ids:
                nursery.start_soon(ask, pid)
        live = [s for s in answers.values() if s is not None and self._same_model(s)]
        dead = [pid.to_string() for pid, s in answers.items() if s is None]
        return sorted(live, key=lambda s: (s.start, s.end, s.peer_id)), dead

    def _same_model(self, s: ServerInfo) -> bool:
        return s.model_name == self.model_name and s.model_hash == self.model_hash


@asynccontextmanager
async def open_client_peer(initial_peers: Sequence[str], host: str = "0.0.0.0",
                           swarm_key: str | None = None) -> AsyncIterator[Peer]:
    """A throwaway client identity in DHT client mode (it asks; it is never asked)."""
    async with open_peer(create_new_key_pair(), host=host, port=0, dht_server=False,
                         initial_peers=initial_peers, swarm_key=swarm_key) as peer:
        yield peer


async def request_forward(peer: Peer, peer_id: str, start: int, end: int, hidden, timeout: float,
                          adapter: str | None = None):
    """Hidden states through blocks [start, end) of one server, statelessly (the forward protocol),
    with the LoRA `adapter` the server serves under that name (None: the base model)."""
    from corolla.p2p.records import FORWARD_PROTOCOL

    request = {"type": "forward", "start": start, "end": end} | ({} if adapter is None else {"adapter": adapter})
    try:
        header, tensors = await one_request(peer, peer_id, FORWARD_PROTOCOL, encode(request, [hidden]), timeout)
    except (StreamGone, trio.TooSlowError) as exc:
        raise PeerUnavailableError(str(peer_id), f"forward: {exc or type(exc).__name__}") from None
    if header.get("type") == "error":
        raise RemoteError(str(header.get("code"))[:64], str(header.get("message"))[:300])
    if header.get("type") != "result" or len(tensors) != 1 or tensors[0].shape != hidden.shape:
        raise ProtocolError(f"server {short_id(peer_id)} answered a forward request with a malformed result")
    return tensors[0]
