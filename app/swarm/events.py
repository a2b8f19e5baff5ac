"""Failovers and waits of an inference session, in one sentence each: with the details (the CLI, the
log, a tooltip) or in plain words (the chat's transcript)."""

from __future__ import annotations

from corolla.p2p.records import format_blocks
from corolla.p2p.session import FailoverEvent, WaitingEvent
from corolla.p2p.spotcheck import LiarCaught


def describe_event(event: FailoverEvent | WaitingEvent) -> str:
    """A sentence for the user about a failover or a wait for missing blocks."""
    if isinstance(event, WaitingEvent) and event.full:
        return (f"the servers holding blocks {format_blocks(event.missing)} are full; "
                f"waiting for room ({event.waited:.0f} s so far)")
    if isinstance(event, WaitingEvent):
        return (f"no live server holds blocks {format_blocks(event.missing)}; "
                f"waiting for one to join ({event.waited:.0f} s so far)")
    to = ", ".join(p[-8:] for p in event.to_peers)
    return (f"blocks {event.start}:{event.end} moved from {event.from_peer[-8:]} to {to} ({event.reason}); "
            f"replayed {event.tokens} tokens in {event.seconds * 1000:.0f} ms")


def plain_event(event: FailoverEvent | WaitingEvent) -> str:
    """The same, in plain words for the chat's transcript."""
    if isinstance(event, WaitingEvent) and event.full:
        return f"The servers for blocks {format_blocks(event.missing)} are full; waiting for room ({event.waited:.0f} s)…"
    if isinstance(event, WaitingEvent):
        return f"Waiting for a server for blocks {format_blocks(event.missing)} ({event.waited:.0f} s so far)…"
    went = "left the swarm" if "leaving" in event.reason else "stopped answering"
    if "request" in event.reason:
        went = "was swapped for a faster one"
    return (f"A server {went}; blocks {event.start}–{event.end - 1} moved to another and the reply "
            f"continued ({event.seconds:.1f} s).")


def describe_liar(caught: LiarCaught) -> str:
    """A server caught returning wrong activations (it is banned and what it decided is redone elsewhere)."""
    return (f"server {caught.peer_id[-8:]} returned wrong activations for blocks {caught.start}:{caught.end} "
            f"(relative error {caught.error:.3g}); banned, the tokens it decided are generated again elsewhere")
