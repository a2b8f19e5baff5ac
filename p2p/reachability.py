"""Can others dial this peer? A dial-back: we ask a peer to open a *fresh* connection to our
public address (the IP it sees us at) on each port we listen on, and prove our identity there.

py-libp2p's AutoNAT answers with `host.connect()`, which reuses the connection we asked over and
so reports PUBLIC for every peer behind a NAT (measured). A new TCP connection plus a Noise
handshake, made here without touching the swarm, cannot be fooled that way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from corolla.p2p.errors import ProtocolError
from corolla.p2p.wire import StreamGone, encode, read_message, write_message

log = logging.getLogger(__name__)

DIALBACK_PROTOCOL = "/corolla/dialback/1.0.0"
DIALBACK_TIMEOUT = 3.0  # s for one dial-back; a router that drops unsolicited SYNs costs all of it
ASK_TIMEOUT = 2 * DIALBACK_TIMEOUT + 2.0
MAX_PORTS = 4

PUBLIC = "public"
PRIVATE = "private"
UNKNOWN = "unknown"


def tcp_listen_ports(host: IHost) -> list[int]:
    ports = []
    for addr in host.get_transport_addrs():
        try:
            ports.append(int(addr.value_for_protocol("tcp")))
        except Exception:  # noqa: BLE001 - not a TCP address
            continue
    return sorted(set(ports))


class DialBack:
    """Answers dial-back requests (every peer does) and asks them."""

    def __init__(self, host: IHost) -> None:
        self.host = host
        host.set_stream_handler(DIALBACK_PROTOCOL, self.handle)

    async def handle(self, stream: INetStream) -> None:
        try:
            header, _ = await read_message(stream, idle_timeout=DIALBACK_TIMEOUT, body_timeout=DIALBACK_TIMEOUT)
            ports = header.get("ports")
            if not (isinstance(ports, list) and 0 < len(ports) <= MAX_PORTS
                    and all(isinstance(p, int) and 0 < p < 65536 for p in ports)):
                raise ProtocolError(f"'ports' must be a list of 1 to {MAX_PORTS} TCP ports")
            ip = observed_ip(stream)
            reached: list[str] = []
            if ip is not None:  # never over a relayed stream: we would dial the relay, not the asker
                peer_id = stream.muxed_conn.peer_id
                async with trio.open_nursery() as nursery:
                    for port in ports:
                        nursery.start_soon(self._try, peer_id, f"/ip4/{ip}/tcp/{port}", reached)
            await write_message(stream, encode({"type": "dialback", "ip": ip or "", "reached": reached}),
                                timeout=DIALBACK_TIMEOUT)
        except (ProtocolError, StreamGone, trio.TooSlowError) as exc:
            log.debug("dial-back request: %s", exc)
        finally:
            with trio.move_on_after(1.0):
                try:
                    await stream.close()
                except Exception:  # noqa: BLE001 - closing a dead stream fails in several ways
                    pass

    async def _try(self, peer_id: ID, addr: str, reached: list[str]) -> None:
        """A new TCP connection and a Noise handshake that proves `peer_id` is there; then close it."""
        network = self.host.get_network()
        maddr = multiaddr.Multiaddr(f"{addr}/p2p/{peer_id}")
        raw = None
        try:
            with trio.fail_after(DIALBACK_TIMEOUT):
                transport = network.transport_manager.transport_for_dialing(maddr)
                raw = await transport.dial(maddr)
                secured = await network.upgrader.upgrade_security(raw, True, peer_id)
                await secured.close()
                raw = None
            reached.append(addr)
        except Exception as exc:  # noqa: BLE001 - every failure means the same: not dialable there
            log.debug("dial-back to %s failed: %s", addr, exc)
        finally:
            if raw is not None:
                with trio.move_on_after(1.0):
                    try:
                        await raw.close()
                    except Exception:  # noqa: BLE001
                        pass

    async def ask(self, helper: ID) -> tuple[str, list[str]]:
        """Ask `helper` to dial us back; (our IP as it sees it, addresses that worked)."""
        ports = tcp_listen_ports(self.host)[:MAX_PORTS]
        if not ports:
            return "", []
        with trio.fail_after(ASK_TIMEOUT):
            stream = await self.host.new_stream(helper, [DIALBACK_PROTOCOL])
            try:
                await write_message(stream, encode({"type": "dialback", "ports": ports}), timeout=ASK_TIMEOUT)
                header, _ = await read_message(stream, idle_timeout=ASK_TIMEOUT, body_timeout=ASK_TIMEOUT)
            finally:
                with trio.move_on_after(0.5):
                    try:
                        await stream.close()
                    except Exception:  # noqa: BLE001
                        pass
        reached = header.get("reached")
        if not isinstance(reached, list):
            raise ProtocolError("a dial-back answer must list the addresses reached")
        return str(header.get("ip", "")), [str(a) for a in reached]

    async def check(self, helpers: Sequence[ID]) -> tuple[str, list[str]]:
        """PUBLIC if any helper reached us on a fresh connection, PRIVATE if helpers answered and none
        did, UNKNOWN if none answered; plus the public addresses that worked."""
        answered = False
        reached: list[str] = []
        for helper in helpers:
            try:
                _, addrs = await self.ask(helper)
            except Exception as exc:  # noqa: BLE001 - a helper that cannot answer gives no verdict
                log.debug("dial-back via %s: %s", helper, exc)
                continue
            answered = True
            reached += addrs
            if reached:
                break
        if reached:
            return PUBLIC, reached
        return (PRIVATE if answered else UNKNOWN), []


def observed_ip(stream: INetStream) -> str | None:
    """The IPv4 address the other side's packets come from; None over a relayed connection."""
    try:
        addrs = stream.muxed_conn.get_transport_addresses()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        addrs = []
    if any("/p2p-circuit" in str(a) for a in addrs):
        return None
    try:
        remote = stream.get_remote_address()
    except Exception:  # noqa: BLE001
        return None
    if not remote or ":" in str(remote[0]):
        return None
    return str(remote[0])
