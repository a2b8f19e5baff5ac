"""Getting through home routers: circuit relay v2 (relaying for others, reserving a slot on a relay,
dialing through one) and DCUtR hole punching, on top of py-libp2p's implementations.

py-libp2p 0.8.1 needs help in three places (measured): its swarm never dials `/p2p-circuit`
addresses (`host.connect()` rejects them), so `NatTraversal.install_dialer` makes the swarm try them
itself; nothing advertises the circuit address after a reservation (corolla.p2p.host adds
`circuit_addrs` to what the host announces); and the relay limits default to 2 min /
128 KiB per circuit, far too little for a conversation's hidden states.
"""

from __future__ import annotations

import logging

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.connection_types import ConnectionType
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.dcutr import MAX_HOLE_PUNCH_ATTEMPTS, RELAY_CLOSE_GRACE_PERIOD, DCUtRProtocol
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service.context import background_trio_service

from corolla.p2p.names import short_id

log = logging.getLogger(__name__)

# A relayed session carries hidden states for as long as a conversation lasts: a 70B model's decode
# step is 16 KiB each way, a 2k-token prefill 32 MiB. Circuits may last a day and carry 4 GiB.
CIRCUIT_SECONDS = 24 * 3600
CIRCUIT_BYTES = 4 * 1024**3
RESERVATIONS_PER_RELAY = 32  # hidden servers one relay stands in for
CIRCUITS_PER_RESERVATION = 8  # clients relayed to one hidden server at once
# so at most 32 x 8 = 256 circuits run through one relay
RESERVATION_TTL = 3600  # s; renewed by py-libp2p's refresher before it lapses
RELAY_DIAL_TIMEOUT = 5.0  # s for one circuit to be set up through a relay
PUNCH_DIAL_TIMEOUT = 3  # s; DCUtR's default (10 s) waits on private addresses that never answer
AUTO_PUNCH_PERIOD = 2.0  # s between looks for relayed peers to punch (py-libp2p's pace)

RELAY_LIMITS = RelayLimits(duration=CIRCUIT_SECONDS, data=CIRCUIT_BYTES,
                           max_circuit_conns=CIRCUITS_PER_RESERVATION,
                           max_reservations=RESERVATIONS_PER_RELAY, reservation_ttl=RESERVATION_TTL)

RELAY_MODES = ("auto", "on", "off")


def is_circuit(addr: object) -> bool:
    return "/p2p-circuit" in str(addr)


class PatientDCUtR(DCUtRProtocol):
    """DCUtR that punches every relayed peer at once and keeps a relayed connection until the streams
    on it have ended.

    py-libp2p punches one peer at a time: a peer behind a symmetric NAT holds its loop for about 25 s
    (a direct dial, then three failing rounds), and every punchable peer waits behind it; on the
    testbed the cone-NAT server then stayed relayed in 2 of 3 runs, and in 0 of 8 once each peer
    has its own task. It also closes the relayed connection 60 s after a direct one is made, which
    would cut a longer inference session opened over the relay in the middle of a generation (the
    client then bans a healthy server). New streams go over the direct connection meanwhile (the
    swarm prefers it)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._punching: set[ID] = set()

    async def _auto_drive_loop(self) -> None:
        while True:
            await trio.sleep(AUTO_PUNCH_PERIOD)
            if self._nursery is None:
                continue
            for peer_id in self._relayed_peers_to_punch():
                self._punching.add(peer_id)
                self._nursery.start_soon(self._punch, peer_id)

    def _relayed_peers_to_punch(self) -> list[ID]:
        """Peers reached only through a relay, not being punched now, with attempts left."""
        out = []
        network = self.host.get_network()
        for peer_id in list(network.connections):
            if (peer_id == self.host.get_id() or peer_id in self._punching or peer_id in self._in_progress
                    or peer_id in self._direct_connections
                    or self._hole_punch_attempts.get(peer_id, 0) >= MAX_HOLE_PUNCH_ATTEMPTS):
                continue
            if connection_path(self.host, peer_id)[0] == "relayed":
                out.append(peer_id)
        return out

    async def _punch(self, peer_id: ID) -> None:
        try:
            await self.initiate_hole_punch(peer_id)
        except Exception as exc:  # noqa: BLE001 - a failed punch leaves the relayed connection working
            log.debug("hole punch to %s failed: %s", peer_id, exc)
        finally:
            self._punching.discard(peer_id)

    async def _close_relayed_conns_after_grace(self, peer_id: ID, grace: float = RELAY_CLOSE_GRACE_PERIOD) -> None:
        await trio.sleep(grace)
        network = self.host.get_network()
        while True:
            relayed = [c for c in network.get_connections(peer_id)
                       if not c.is_closed and any(is_circuit(a) for a in c.get_transport_addresses())]
            if not relayed or not await self._verify_direct_connection(peer_id):
                return
            idle = [c for c in relayed if not c.get_streams()]
            for conn in idle:
                log.debug("closing the relayed connection to %s: a direct one took over", peer_id)
                await conn.close()
            if len(idle) == len(relayed):
                return
            await trio.sleep(1.0)


class NatTraversal:
    """Relay roles, relayed dialing and hole punching of one host. `start` it in a nursery."""

    def __init__(self, host: IHost, *, hop: bool = False) -> None:
        self.host = host
        self.protocol = CircuitV2Protocol(host, limits=RELAY_LIMITS, allow_hop=False)
        roles = RelayRole.STOP | RelayRole.CLIENT
        self.transport = CircuitV2Transport(host, self.protocol, RelayConfig(roles=roles, limits=RELAY_LIMITS))
        self.dcutr = PatientDCUtR(host, dial_timeout=PUNCH_DIAL_TIMEOUT)
        self.circuit_addrs: list[multiaddr.Multiaddr] = []  # ours, one per relay that holds a slot
        self.relays: list[ID] = []
        self.hop = False
        self._nursery: trio.Nursery | None = None
        self._want_hop = hop

    async def start(self, nursery: trio.Nursery) -> None:
        """Run the relay protocol (STOP: accept relayed connections) and DCUtR in `nursery`."""
        self._nursery = nursery
        await nursery.start(_serve, self.protocol)
        await nursery.start(_serve, self.dcutr)
        self.install_dialer()
        self.keep_busy_relayed_connections()
        if self._want_hop:
            self.act_as_relay()

    def act_as_relay(self) -> None:
        """Relay circuits for hidden peers (HOP), within RELAY_LIMITS."""
        if not self.hop:
            self.protocol.allow_hop = True
            self.host.set_stream_handler(HOP_PROTOCOL, self.protocol._handle_hop_stream)
            self.hop = True

    def keep_busy_relayed_connections(self) -> None:
        """With one connection per peer (see open_peer), the swarm closes the older connection as soon
        as DCUtR adds a direct one, which resets every stream on it: an inference session opened over
        the relay would fail mid-generation (measured). Keep a relayed connection that still carries
        streams; PatientDCUtR closes it once they have ended."""
        network = self.host.get_network()
        trim = network._trim_connections

        def trim_connections(peer_id: ID) -> None:
            conns = network.connections.get(peer_id, [])
            if any(any(is_circuit(a) for a in c.get_transport_addresses()) and c.get_streams() for c in conns):
                return
            trim(peer_id)

        network._trim_connections = trim_connections

    def install_dialer(self) -> None:
        """Make the swarm dial a peer's `/p2p-circuit` addresses when it knows them (it never does by
        itself), instead of its direct ones: a peer advertises a circuit only when it cannot be dialled."""
        network = self.host.get_network()
        direct_dial = network.dial_peer
        store = self.host.get_peerstore()

        async def dial_peer(peer_id: ID):
            live = [c for c in network.get_connections(peer_id) if not c.is_closed]
            if live:
                return live
            try:
                circuits = [a for a in store.addrs(peer_id) if is_circuit(a)]
            except Exception:  # noqa: BLE001 - an unknown peer has no addresses: dial as usual
                circuits = []
            if not circuits:
                return await direct_dial(peer_id)
            # Its other addresses are private ones behind its NAT: dialling them from elsewhere waits
            # for a TCP timeout, long enough to stall a whole DHT lookup (measured). Relays only.
            for addr in circuits:
                try:
                    with trio.fail_after(RELAY_DIAL_TIMEOUT):
                        return [await self.transport.dial(addr)]
                except Exception as exc:  # noqa: BLE001 - try the next relay
                    log.debug("relayed dial to %s via %s failed: %s", peer_id, addr, exc)
            raise SwarmException(f"no relay could reach {peer_id}")

        network.dial_peer = dial_peer

    async def reserve(self, relay_id: ID, relay_addr: multiaddr.Multiaddr) -> bool:
        """Hold a slot on a relay so that others reach us through it; advertise the circuit address.
        `relay_addr` is how we reached the relay (others must be able to reach it the same way)."""
        if self._nursery is None:
            raise RuntimeError("NatTraversal.start() must run before reserve()")
        try:
            with trio.fail_after(RELAY_DIAL_TIMEOUT):
                stream = await self.host.new_stream(relay_id, [HOP_PROTOCOL])
                ok = await self.transport.reserve(stream, relay_id, self._nursery)
        except Exception as exc:  # noqa: BLE001 - the relay refused or went away: try another
            log.info("relay %s refused a reservation: %s", relay_id, exc)
            return False
        if not ok:
            return False
        base = str(relay_addr).split("/p2p/")[0]
        circuit = multiaddr.Multiaddr(f"{base}/p2p/{relay_id}/p2p-circuit")
        if circuit not in self.circuit_addrs:
            self.circuit_addrs.append(circuit)
            self.relays.append(relay_id)
        return True


def connection_path(host: IHost, peer_id: ID) -> tuple[str, str]:
    """How we are connected to `peer_id` now: ('direct', '') or ('relayed', relay peer id), or
    ('none', '') without a connection."""
    conns = [c for c in host.get_network().get_connections(peer_id) if not c.is_closed]
    if not conns:
        return "none", ""
    for conn in conns:
        try:
            direct = conn.get_connection_type() != ConnectionType.RELAYED
            addrs = conn.get_transport_addresses()
        except Exception:  # noqa: BLE001 - a connection closing under us
            continue
        if direct and not any(is_circuit(a) for a in addrs):
            return "direct", ""
    for conn in conns:
        for addr in conn.get_transport_addresses():
            text = str(addr)
            if is_circuit(text):
                relay = text.split("/p2p-circuit")[0].rsplit("/p2p/", 1)[-1]
                return "relayed", relay
    return "relayed", ""


async def _serve(service, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with background_trio_service(service):
        task_status.started()
        await trio.sleep_forever()


def describe_path(host: IHost, peer_id: str, reachability: str) -> str:
    """For people: 'direct', 'hole-punched' (direct to a peer that cannot be dialled), 'relayed via
    <relay>' or 'not connected'."""
    kind, relay = connection_path(host, ID.from_base58(peer_id))
    if kind == "direct":
        return "hole-punched" if reachability == "private" else "direct"
    if kind == "relayed":
        return f"relayed via {short_id(relay)}" if relay else "relayed"
    return "not connected"


async def wait_for_punches(host: IHost, peer_ids: list[str], timeout: float) -> None:
    """Wait up to `timeout` s while any of these peers is reached through a relay: DCUtR tries to
    replace a relayed connection with a direct one within a few seconds of it opening."""
    with trio.move_on_after(timeout):
        while any(connection_path(host, ID.from_base58(p))[0] == "relayed" for p in peer_ids):
            await trio.sleep(0.25)
