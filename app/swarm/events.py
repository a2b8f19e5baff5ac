"""Failovers and waits of an inference session, in one sentence each (for the chat and the CLI)."""

from __future__ import annotations

from corolla.p2p.records import format_blocks
from corolla.p2p.session import FailoverEvent, WaitingEvent


def describe_event(event: FailoverEvent | WaitingEvent) -> str:
    """A sentence for the user about a failover or a wait for missing blocks."""
    if isinstance(event, WaitingEvent):
        return (f"no live server holds blocks {format_blocks(event.missing)}; "
                f"waiting for one to join ({event.waited:.0f} s so far)")
    to = ", ".join(p[-8:] for p in event.to_peers)
    return (f"blocks {event.start}:{event.end} moved from {event.from_peer[-8:]} to {to} ({event.reason}); "
            f"replayed {event.tokens} tokens in {event.seconds * 1000:.0f} ms")
