"""`corolla generate --initial-peers`: the decoding loop of core, with the blocks run by the swarm."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from corolla.core.model import ModelInfo
from corolla.p2p.client import SwarmClient, open_client_peer
from corolla.p2p.records import format_blocks
from corolla.p2p.reputation import Reputation
from corolla.p2p.session import FailoverEvent, InferenceSession, WaitingEvent
from corolla.p2p.spotcheck import DEFAULT_RATE, LiarCaught, SpotCheck


def describe_event(event: FailoverEvent | WaitingEvent) -> str:
    if isinstance(event, WaitingEvent) and event.full:
        return (f"[swarm] the servers holding blocks {format_blocks(event.missing)} are full; "
                f"waiting for room ({event.waited:.0f} s so far)")
    if isinstance(event, WaitingEvent):
        return (f"[swarm] no live server holds blocks {format_blocks(event.missing)}; "
                f"waiting for one ({event.waited:.0f} s so far)")
    to = ", ".join(p[-8:] for p in event.to_peers)
    return (f"[swarm] blocks {event.start}:{event.end} moved from {event.from_peer[-8:]} to {to} "
            f"({event.reason}); replayed {event.tokens} tokens in {event.seconds * 1000:.0f} ms")


async def generate_through_swarm(path: Path, decoder, initial_peers: list[str], verbose: bool = False,
                                 step_timeout: float | None = None, spot_check: float = DEFAULT_RATE,
                                 swarm_key: str | None = None) -> str:
    """Run `decoder` to the end through a route of servers; return the generated text."""
    model = ModelInfo.load(path)

    def log(text: str) -> None:
        if verbose:
            print(text, file=sys.stderr, flush=True)

    def on_event(event: FailoverEvent | WaitingEvent) -> None:
        print(describe_event(event), file=sys.stderr, flush=True)

    kwargs = {} if step_timeout is None else {"timeout": step_timeout}

    def on_caught(caught: LiarCaught) -> None:
        print(f"[swarm] server {caught.peer_id} returned wrong activations for blocks {caught.start}:{caught.end} "
              f"(relative error {caught.error:.3g}); banned, step redone elsewhere", file=sys.stderr, flush=True)

    checks = SpotCheck(spot_check, on_caught=on_caught) if spot_check > 0 else None
    async with open_client_peer(initial_peers, swarm_key=swarm_key) as peer:
        client = SwarmClient(peer, model.name, model.hash, model.num_blocks, reputation=Reputation.default())
        async with InferenceSession(client, decoder.max_length, on_event=on_event, spot_check=checks,
                                    **kwargs) as session:
            log("[swarm] route: " + " -> ".join(
                f"blocks {h.start}:{h.end} on {h.peer_id} ({h.server.rtt_ms:.1f} ms rtt, "
                f"{h.server.block_ms:.2f} ms/block)" for h in session.route))
            hidden = decoder.start()
            while hidden is not None:
                hidden = decoder.advance(await session.forward(hidden))
            if verbose:
                log("[swarm] final route: " + " -> ".join(str(h) for h in session.route))
    return decoder.text


def run_swarm_generation(path: Path, decoder, initial_peers: list[str], verbose: bool = False,
                         spot_check: float = DEFAULT_RATE, swarm_key: str | None = None) -> str:
    from corolla.app.serve.runtime import run_trio

    return run_trio(functools.partial(generate_through_swarm, spot_check=spot_check, swarm_key=swarm_key),
                    path, decoder, initial_peers, verbose)
