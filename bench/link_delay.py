"""A one-way delay on every TCP write of the libp2p peers in this process (for benchmarks).

Where the kernel's netem is missing (this project's GPU machine has no `tc` and no netem), the delay
is applied where py-libp2p hands bytes to its TCP socket: each write is stamped and sent by a task
of that connection once `rtt / 2` has passed, in order, without holding the writer (as a link's
propagation delay behaves: many writes in flight, none reordered, no bandwidth limit). Both ends
of every connection write through it, so a request and its answer take one RTT more than without.
Everything on the connection is delayed alike: libp2p's Noise and Yamux frames, DHT and info
requests, inference steps, server-to-server pushes.

    with delayed_links() as links: links.rtt_ms = 50
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager

import trio
from libp2p.io.trio import TrioTCPStream


class Links:
    """The RTT every connection of this process has now, ms (0: no delay)."""

    rtt_ms: float = 0.0


@contextmanager
def delayed_links() -> Iterator[Links]:
    """Patch TrioTCPStream.write while the block runs; yields the Links whose rtt_ms applies."""
    links = Links()
    original = TrioTCPStream.write

    async def write(self: TrioTCPStream, data: bytes) -> None:
        if links.rtt_ms <= 0 and not getattr(self, "_pending", None):
            return await original(self, data)
        if not hasattr(self, "_pending"):
            self._pending = collections.deque()
            self._wake = trio.Event()
            trio.lowlevel.spawn_system_task(_sender, self, original)
        self._pending.append((trio.current_time() + links.rtt_ms / 2000, data))
        self._wake.set()

    TrioTCPStream.write = write  # type: ignore[method-assign]
    try:
        yield links
    finally:
        TrioTCPStream.write = original  # type: ignore[method-assign]


async def _sender(stream: TrioTCPStream, original) -> None:
    """Send the connection's stamped writes in order, each when its time has come."""
    while True:
        while not stream._pending:
            stream._wake = trio.Event()
            await stream._wake.wait()
        due, data = stream._pending[0]
        await trio.sleep_until(due)
        stream._pending.popleft()
        try:
            await original(stream, data)
        except Exception:  # noqa: BLE001 - the connection broke: its reader reports it
            stream._pending.clear()
            return
