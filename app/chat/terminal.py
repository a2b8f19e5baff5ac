"""`corolla demo --headless`: a chat in the terminal, through the same reply loop as the app's."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import trio

from corolla.app.chat.reply import ReplyEvents, ReplyWriter
from corolla.app.swarm.connection import SwarmConnection
from corolla.app.swarm.events import plain_event
from corolla.app.swarm.remote import SwarmRouteFactory
from corolla.core.generation import SamplingParams
from corolla.p2p.routing import RouteHop


def _route_text(hops: list[RouteHop]) -> str:
    return " -> ".join(str(h) for h in hops)


async def terminal_chat(initial_peers: list[str], model_path: Path, sampling: SamplingParams,
                        system_prompt: str = "", out: TextIO | None = None, inp: TextIO | None = None) -> int:
    """Read a message per line from `inp` (stdin), stream each reply to `out` (stdout); ends at EOF or /quit."""
    out = out or sys.stdout
    inp = inp or sys.stdin
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def say(text: str, end: str = "\n") -> None:
        out.write(text + end)
        out.flush()

    events = ReplyEvents(
        on_route=lambda hops: say(f"[route: {_route_text(hops)}]\nassistant> ", end=""),
        on_reroute=lambda event, hops: say(f"\n[{plain_event(event)}]"),
        on_wait=lambda event: say(f"\n[{plain_event(event)}]"),
        on_text=lambda text: say(text, end=""),
    )
    async with trio.open_nursery() as nursery:
        writer = ReplyWriter(lambda: model_path,
                             SwarmRouteFactory(SwarmConnection(initial_peers, lambda: model_path, lambda: nursery)))
        await writer.model()
        say("Chat with the swarm. Type a message and press Enter; /quit or end of input leaves.")
        while True:
            say("you> ", end="")
            try:
                line = await trio.to_thread.run_sync(inp.readline)
            except KeyboardInterrupt:
                break
            if not line or line.strip() == "/quit":
                break
            if not line.strip():
                continue
            messages.append({"role": "user", "content": line.strip()})
            reply = await writer.write(messages, sampling, events)
            say("")
            messages.append({"role": "assistant", "content": reply.text})
        await writer.aclose()
        nursery.cancel_scope.cancel()
    return 0
