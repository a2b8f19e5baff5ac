"""Text held back for spot checks that never decide (two servers disagree and no third one exists)
still reaches the reader when the reply ends: `ReplyWriter.write` streams the whole reply."""

from __future__ import annotations

from contextlib import asynccontextmanager

import trio

from corolla.app.chat.reply import ReplyEvents, ReplyWriter
from corolla.app.swarm.local import LocalRouteFactory
from corolla.core.generation import SamplingParams


class UndecidedChecks(LocalRouteFactory):
    """Local spans whose route says, like a swarm route whose checks come back unsure, that no
    output was ever checked."""

    @asynccontextmanager
    async def open(self, *args, **kwargs):
        async with super().open(*args, **kwargs) as route:
            async def checked(final: bool = False) -> int:
                return 0

            route.checked = checked
            yield route


def test_text_held_for_undecided_checks_is_streamed_when_the_reply_ends(default_model_path):
    params = SamplingParams(max_new_tokens=8, temperature=0)
    shown: list[str] = []

    async def main():
        held = ReplyWriter(lambda: default_model_path, UndecidedChecks(default_model_path, [(0, 30)]))
        plain = ReplyWriter(lambda: default_model_path, LocalRouteFactory(default_model_path, [(0, 30)]))
        reply = await held.write("The capital of France is", params, ReplyEvents(on_text=shown.append))
        return reply, await plain.write("The capital of France is", params)

    reply, plain = trio.run(main)
    assert reply.text == plain.text and reply.text.startswith(" Paris")
    assert "".join(shown) == reply.text
    assert len(shown) == 1  # all of it at the end: nothing was shown before it was checked
