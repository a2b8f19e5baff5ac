"""A bare Corolla peer for the NAT tests (no model): `python -m tests.p2p.nat_peer ROLE ...`.

    relay PORT                    a DHT server that relays; prints its address
    hidden PORT RELAY_ADDR        checks reachability, reserves a slot if hidden, echoes; prints both
    dial RELAY_ADDR ADDR...       echoes through each peer (circuit addresses dialled by the relay
                                  transport), waits for hole punching, echoes again; prints JSON
"""

from __future__ import annotations

import json
import sys

import multiaddr
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from corolla.p2p.host import open_peer
from corolla.p2p.nat import connection_path, wait_for_punches

ECHO = "/corolla-test/echo/1.0.0"


async def echo(stream) -> None:
    data = await stream.read(1024)
    await stream.write(data)
    await stream.close()


async def ask(peer, pid: ID) -> bool:
    with trio.fail_after(10):
        stream = await peer.host.new_stream(pid, [ECHO])
        await stream.write(b"ping")
        ok = await stream.read(1024) == b"ping"
        await stream.close()
    return ok


async def main(role: str, args: list[str]) -> None:
    if role == "relay":
        async with open_peer(create_new_key_pair(), port=int(args[0]), relay="on") as peer:
            print("relay", [a for a in peer.addrs if "/127." not in a][0], flush=True)
            await trio.sleep_forever()
    elif role == "hidden":
        async with open_peer(create_new_key_pair(), port=int(args[0]), initial_peers=[args[1]], relay="auto",
                             check_reachability=True) as peer:
            peer.host.set_stream_handler(ECHO, echo)
            print("peer", peer.peer_id, peer.reachability, json.dumps(peer.addrs), flush=True)
            await trio.sleep_forever()
    elif role == "dial":
        async with open_peer(create_new_key_pair(), dht_server=False, initial_peers=[args[0]]) as peer:
            result = {}
            for text in args[1:]:
                addr = multiaddr.Multiaddr(text)
                pid = ID.from_base58(text.rsplit("/p2p/", 1)[1])
                peer.host.get_peerstore().add_addrs(pid, [addr], 600)
                with trio.fail_after(10):  # the path right after the first connection, before any punch
                    await peer.host.get_network().dial_peer(pid)
                path_first = connection_path(peer.host, pid)[0]
                result[str(pid)] = {"first": await ask(peer, pid), "path_first": path_first}
            await wait_for_punches(peer.host, list(result), 10.0)
            for pid, r in result.items():
                r["path"], r["relay"] = connection_path(peer.host, ID.from_base58(pid))
                r["after"] = await ask(peer, ID.from_base58(pid))
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2:])
