"""A libp2p peer: TCP + Noise + Yamux host with a persistent identity, plus its Kademlia DHT."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.peer.peerstore import PeerStoreError
from libp2p.tools.anyio_service.context import background_trio_service

from corolla.p2p.errors import BadAddressError, SwarmError
from corolla.p2p.nat import RELAY_MODES, NatTraversal
from corolla.p2p.reachability import PRIVATE, PUBLIC, UNKNOWN, DialBack

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0
RELAYS_WANTED = 2  # slots a hidden peer holds, so that losing one relay does not hide it

# py-libp2p's yamux sends a window update after every read by default: one extra encrypted frame per
# message, both ways. go-yamux batches them (update once half the window is consumed); do the same.
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")


def quiet_libp2p_logs() -> None:
    """The DHT warns on nearly every request and logs routine stream failures as errors: silence it."""
    for name in ("libp2p", "multiaddr", "async_service", "libp2p.kad_dht"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def parse_peer_addr(text: str) -> PeerInfo:
    """Parse `/ip4/…/tcp/…/p2p/<peer id>` into a PeerInfo; raise BadAddressError naming the problem."""
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(text.strip()))
    except Exception as exc:  # multiaddr raises several unrelated types
        raise BadAddressError(f"cannot use peer address {text!r}: {exc}; expected /ip4/HOST/tcp/PORT/p2p/PEER_ID"
                              ) from exc


@dataclass
class Peer:
    """A running host and its DHT. `addrs` are full multiaddrs ending in /p2p/<peer id>."""

    host: IHost
    dht: KadDHT
    nat: NatTraversal | None = None
    dialback: DialBack | None = None
    reachability: str = UNKNOWN  # PUBLIC, PRIVATE or UNKNOWN, as a dial-back by another peer found

    @property
    def peer_id(self) -> str:
        return self.host.get_id().to_string()

    @property
    def addrs(self) -> list[str]:
        pid = self.peer_id
        out = []
        for a in self.host.get_addrs():
            s = str(a)
            out.append(s if "/p2p/" in s else f"{s}/p2p/{pid}")
        return out

    def public_addrs(self, host_hint: str = "127.0.0.1") -> list[str]:
        """Addresses worth printing for others: 0.0.0.0 replaced by `host_hint`."""
        return [a.replace("/ip4/0.0.0.0/", f"/ip4/{host_hint}/") for a in self.addrs]

    async def connect(self, info: PeerInfo, timeout: float = CONNECT_TIMEOUT) -> None:
        """Connect to a peer and add it to the DHT routing table."""
        with trio.fail_after(timeout):
            await self.host.connect(info)
        await self.dht.add_peer(info.peer_id)

    async def join(self, initial_peers: Sequence[str]) -> int:
        """Connect to each initial peer (failures logged, not fatal); return how many answered."""
        joined = 0
        for text in initial_peers:
            info = parse_peer_addr(text)
            try:
                await self.connect(info)
                joined += 1
            except Exception as exc:  # noqa: BLE001 - one bad bootstrap must not stop the others
                log.warning("cannot reach initial peer %s: %s", text, exc)
        if initial_peers and joined == 0:
            raise SwarmError(f"none of the initial peers answered: {', '.join(initial_peers)}")
        return joined

    def prune_clients(self) -> int:
        """Drop peers that turned out to be DHT clients from the routing table; return how many.

        py-libp2p adds a peer that queries us before identify has told which protocols it speaks, so
        clients (which come and go) pile up in a bootstrap's table, and every lookup through it then
        waits on dials to long-gone clients (measured: 1.5 s per lookup after a few dozen runs)."""
        table, store = self.dht.routing_table, self.host.get_peerstore()
        dropped = 0
        for pid in table.get_peer_ids():
            try:
                protocols = store.get_protocols(pid)
            except PeerStoreError:  # identify has not run: keep it
                protocols = []
            if protocols and KAD_PROTOCOL not in protocols and table.remove_peer(pid):
                dropped += 1
        return dropped

    async def find_reachability(self, initial_peers: Sequence[str], relay: str) -> str:
        """Ask the initial peers to dial us back on a fresh connection. Behind a NAT, reserve a slot on
        those that relay (its circuit address is then announced with ours); reachable and with
        `relay` 'auto', relay for others. Returns PUBLIC, PRIVATE or UNKNOWN."""
        if self.dialback is None or self.nat is None:
            return self.reachability
        infos = [parse_peer_addr(a) for a in initial_peers]
        self.reachability, reached = await self.dialback.check([i.peer_id for i in infos])
        if self.reachability == PRIVATE:
            for info, text in zip(infos, initial_peers, strict=True):
                if len(self.nat.relays) >= RELAYS_WANTED:
                    break
                if await self.nat.reserve(info.peer_id, multiaddr.Multiaddr(text)):
                    log.info("reachable through relay %s", info.peer_id)
            if not self.nat.relays:
                log.warning("this peer cannot be dialled and no relay gave it a slot: only peers it dials "
                            "itself can reach it")
        elif self.reachability == PUBLIC:
            log.info("reachable at %s", ", ".join(reached))
            if relay == "auto":
                self.nat.act_as_relay()
        return self.reachability

    async def refresh(self) -> None:
        """Fill the DHT routing table from the peers joined (takes about 1.5 s even on loopback)."""
        with trio.move_on_after(CONNECT_TIMEOUT):
            await self.dht.refresh_routing_table()


@asynccontextmanager
async def open_peer(
    key_pair: KeyPair,
    *,
    host: str = "0.0.0.0",
    port: int = 0,
    dht_server: bool = True,
    initial_peers: Sequence[str] = (),
    relay: str = "off",
    check_reachability: bool = False,
    swarm_key: str | None = None,
) -> AsyncIterator[Peer]:
    """Start a host listening on host:port and its DHT (server mode answers queries; client mode
    only asks, so its lookups always go to the network), join `initial_peers`, yield the Peer.

    Every peer dials through relays and punches holes (DCUtR) when it can. With
    `check_reachability`, the initial peers dial it back first (see Peer.find_reachability).
    `relay`: 'on' relays circuits for hidden peers, 'auto' does once a dial-back proves this peer
    reachable (or when it has no initial peers: it is then the swarm's first, public, peer)."""
    if relay not in RELAY_MODES:
        raise SwarmError(f"unknown relay mode {relay!r}; use one of {', '.join(RELAY_MODES)}")
    quiet_libp2p_logs()
    listen = [multiaddr.Multiaddr(f"/ip4/{host}/tcp/{port}")]
    # One connection per peer: otherwise every connect() waits an extra 250 ms (measured). No
    # minimum connection count: the default (50) redials every known peer, dead ones included,
    # whenever a connection drops.
    config = ConnectionConfig(max_connections_per_peer=1, min_connections=0, low_watermark=0)
    # swarm_key: 64 hex digits of a private swarm's pre-shared key (p2p/pnet.py); None: the open swarm.
    h = new_host(key_pair=key_pair, listen_addrs=listen, connection_config=config, psk=swarm_key)
    nat = NatTraversal(h, hop=relay == "on" or (relay == "auto" and not initial_peers))
    announce_addrs(h, nat)
    if port:
        check_port_free(host, port)
    started = False
    try:
        async with h.run(listen_addrs=listen):
            started = True
            dht = KadDHT(h, DHTMode.SERVER if dht_server else DHTMode.CLIENT, enable_random_walk=False)
            async with background_trio_service(dht), trio.open_nursery() as nursery:
                peer = Peer(h, dht, nat, DialBack(h))
                await nat.start(nursery)
                if await peer.join(initial_peers) and check_reachability:
                    await peer.find_reachability(initial_peers, relay)
                if initial_peers:
                    if dht_server:  # its announcements must reach every close peer: wait for the table
                        await peer.refresh()
                    else:  # lookups walk from the joined peers anyway: fill the table meanwhile
                        nursery.start_soon(peer.refresh)
                yield peer
                nursery.cancel_scope.cancel()
    except OSError as exc:
        if started:
            raise
        raise SwarmError(f"cannot listen on {host}:{port}: {exc}") from exc


def local_ips() -> list[str]:
    """This machine's address on its default route (found without sending a packet) and loopback."""
    ips = ["127.0.0.1"]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            ips.insert(0, s.getsockname()[0])
    except OSError:
        pass
    return sorted(set(ips), key=ips.index)


def announce_addrs(h: IHost, nat: NatTraversal) -> None:
    """Make the host announce dialable addresses (identify, DHT provider records): py-libp2p
    announces a 0.0.0.0 listen address as is, which others can only dial on the same machine; and
    a hidden peer's circuit addresses, which py-libp2p never adds. Not through new_host's
    addrs_factory: get_addrs strips the first /p2p/ part of each address, which in a circuit address
    is the relay's, and would claim the relay's address as ours."""
    own = h.get_addrs
    suffix = multiaddr.Multiaddr(f"/p2p/{h.get_id()}")

    def get_addrs() -> list[multiaddr.Multiaddr]:
        out: list[multiaddr.Multiaddr] = []
        for addr in own():
            text = str(addr)
            if text.startswith("/ip4/0.0.0.0/"):
                out += [multiaddr.Multiaddr(text.replace("/ip4/0.0.0.0/", f"/ip4/{ip}/")) for ip in local_ips()]
            else:
                out.append(addr)
        return list(dict.fromkeys(out + [c.encapsulate(suffix) for c in nat.circuit_addrs]))

    h.get_addrs = get_addrs  # type: ignore[method-assign]


def check_port_free(host: str, port: int) -> None:
    """Raise SwarmError if another program listens on host:port. py-libp2p listens with SO_REUSEPORT
    (for hole punching), so a second server on the same port would start silently and share the
    connections of the first; a plain bind, without that option, tells."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sys.platform != "win32":  # lets a restarted server reuse its port despite TIME_WAIT connections;
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # on Windows it would allow stealing
    try:
        probe.bind((host, port))
    except OSError as exc:
        raise SwarmError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                         "is another Corolla peer using this port? choose another with --port") from None
    finally:
        probe.close()
