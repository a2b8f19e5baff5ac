"""A private swarm: a real `corolla bootstrap --swarm-key FILE` process admits peers holding the key
and refuses every other peer (no key, or another key) at the connection."""

from __future__ import annotations

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from corolla.app.demo.processes import ADDR_RE, ChildProcess
from corolla.p2p.errors import SwarmError
from corolla.p2p.host import open_peer
from corolla.p2p.pnet import SwarmKeyError, read_swarm_key, write_swarm_key

pytestmark = pytest.mark.slow


def joins(addr: str, key: str | None) -> bool:
    async def main() -> bool:
        with trio.fail_after(20):
            async with open_peer(create_new_key_pair(), host="127.0.0.1", initial_peers=[addr],
                                 swarm_key=key) as peer:
                return len(peer.dht.routing_table.get_peer_ids()) > 0

    try:
        return trio.run(main)
    except* SwarmError as group:
        assert any("none of the initial peers answered" in str(e) for e in leaves(group))  # noqa: PT017
    return False


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def test_a_peer_without_the_swarm_key_is_refused(tmp_path):
    key_file = tmp_path / "swarm.key"
    boot = ChildProcess("bootstrap", ["bootstrap", "--host", "127.0.0.1", "--swarm-key", str(key_file),
                                      "--identity", str(tmp_path / "boot.key")], tmp_path)
    try:
        addr = boot.wait_for(ADDR_RE.pattern).group(1)
        assert "created swarm key" in boot.output()
        key = read_swarm_key(key_file)
        assert joins(addr, key)
        assert not joins(addr, None)
        other = write_swarm_key(tmp_path / "other.key")
        assert not joins(addr, other)
        assert joins(addr, key)  # the refusals cost the swarm nothing
        assert boot.proc.poll() is None
    finally:
        boot.stop()


def test_a_malformed_swarm_key_file_is_named(tmp_path):
    bad = tmp_path / "swarm.key"
    bad.write_text("/key/swarm/psk/1.0.0/\n/base16/\nnot-hex\n")
    with pytest.raises(SwarmKeyError, match="64 hex digits"):
        read_swarm_key(bad)
    with pytest.raises(SwarmKeyError, match="cannot read"):
        read_swarm_key(tmp_path / "missing.key")
