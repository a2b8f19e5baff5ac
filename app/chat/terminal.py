"""`corolla demo --headless`: a chat in the terminal, through the same swarm route as the GUI's."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import trio

from corolla.app.settings import Sampling
from corolla.app.swarm.connection import SwarmConnection
from corolla.app.swarm.remote import SwarmRouteFactory
from corolla.app.swarm.route import Hop, RouteListener
from corolla.core.generation import Decoder, chat_prompt_ids
from corolla.ui.bridge.chat_backend import ClientModel, sampling_params


def _route_text(hops: list[Hop]) -> str:
    return " -> ".join(f"blocks {h.blocks} on …{h.peer[-8:]}" for h in hops)


async def terminal_chat(initial_peers: list[str], model_path: Path, sampling: Sampling,
                        system_prompt: str = "", out: TextIO | None = None, inp: TextIO | None = None) -> int:
    """Read a message per line from `inp` (stdin), stream each reply to `out` (stdout); ends at EOF or /quit."""
    out = out or sys.stdout
    inp = inp or sys.stdin
    model = await trio.to_thread.run_sync(ClientModel, model_path)
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def say(text: str, end: str = "\n") -> None:
        out.write(text + end)
        out.flush()

    listener = RouteListener(
        on_route=lambda hops: say(f"[route: {_route_text(hops)}]"),
        on_reroute=lambda notice, hops: say(f"\n[rerouted: {notice}]"),
        on_notice=lambda notice: say(f"\n[{notice}]"),
    )
    async with trio.open_nursery() as nursery:
        routes = SwarmRouteFactory(SwarmConnection(initial_peers, lambda: model_path, lambda: nursery))
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
            decoder = Decoder(model.head, model.tokenizer, sampling_params(sampling),
                              chat_prompt_ids(model.tokenizer, messages),
                              on_text=lambda text: say(text, end=""))
            async with routes.open(decoder.max_length, listener) as route:
                say("assistant> ", end="")
                hidden = decoder.start()
                while hidden is not None:
                    hidden = await trio.to_thread.run_sync(decoder.advance, await route.forward(hidden))
            say("")
            messages.append({"role": "assistant", "content": decoder.text})
        await routes.aclose()
        nursery.cancel_scope.cancel()
    return 0
