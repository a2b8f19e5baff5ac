"""Failovers and waits of an inference session, in one sentence each: with the details (the CLI, the
log, a tooltip) or in plain words (the chat's transcript)."""

from __future__ import annotations

from corolla.p2p.names import blocks_text, format_blocks, peer_name, short_id
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
    return (f"{blocks_text(event.start, event.end)} moved from {_name(event, event.from_peer)} to "
            f"{_names_to(event)} ({event.reason}); replayed {event.tokens} tokens in {event.seconds * 1000:.0f} ms")


def plain_event(event: FailoverEvent | WaitingEvent) -> str:
    """The same, in plain words for the chat's transcript."""
    if isinstance(event, WaitingEvent) and event.full:
        return f"The servers for blocks {format_blocks(event.missing)} are full; waiting for room ({event.waited:.0f} s)…"
    if isinstance(event, WaitingEvent):
        return f"Waiting for a server for blocks {format_blocks(event.missing)} ({event.waited:.0f} s so far)…"
    went = "left the swarm" if "leaving" in event.reason else "stopped answering"
    if "request" in event.reason:
        went = "was swapped for a faster one"
    return (f"Server {_name(event, event.from_peer)} {went}; {blocks_text(event.start, event.end)} moved to "
            f"another ({_names_to(event)}) and the reply continued ({event.seconds:.1f} s).")


def describe_liar(caught: LiarCaught) -> str:
    """A server caught returning wrong activations (it is banned and what it decided is redone elsewhere)."""
    return (f"server {short_id(caught.peer_id)} returned wrong activations for {blocks_text(caught.start, caught.end)} "
            f"(relative error {caught.error:.3g}); banned, the tokens it decided are generated again elsewhere")


def _name(event: FailoverEvent, peer_id: str) -> str:
    return peer_name(peer_id, event.nicknames.get(peer_id, ""))


def _names_to(event: FailoverEvent) -> str:
    return ", ".join(_name(event, p) for p in event.to_peers)
