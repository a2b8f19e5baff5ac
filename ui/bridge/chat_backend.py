"""What the chat window talks to: the Qt face of app/chat/reply.py's ReplyWriter.

Every reply runs in the trio thread; its text, route and notices come back to the GUI thread as Qt
signals. One reply streams at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

from corolla.app.chat.reply import ModelCard, ReplyEvents, ReplyWriter
from corolla.app.errors import ChatBackendError, corolla_error_in
from corolla.app.swarm.events import describe_event, plain_event
from corolla.app.swarm.route import RouteFactory
from corolla.core.generation import SamplingParams
from corolla.p2p.routing import RouteHop
from corolla.p2p.session import FailoverEvent
from corolla.ui.bridge.trio_thread import Job, TrioThread

log = logging.getLogger(__name__)


class ChatBackend(QObject):
    ready = Signal(object)  # ModelCard, once the tokenizer and head are loaded
    token = Signal(int, str)  # request id, text to append
    finished = Signal(int, str)  # request id, "eos" | "length" | "stop" | "stopped"
    failed = Signal(int, str)  # request id, what went wrong, for the user
    route_changed = Signal(list)  # list[RouteHop]
    paths_changed = Signal(dict)  # peer id -> how it is reached: 'direct', 'hole-punched', 'relayed via …'
    rerouted = Signal(str, str)  # what happened in plain words, the details (peers, reason, replay)
    notice = Signal(str)  # something the user should know (waiting for missing blocks, ...)
    reply_stats = Signal(int, str)  # request id, "7 tokens · 5.2 tokens/s · first token after 0.84 s"
    context_usage = Signal(int, int)  # tokens used, context length
    tuned_chosen = Signal(object)  # Path of the tuned prompts replies now use, or None
    tuned_refused = Signal(str)  # why a tuned-prompts file was refused, in plain words
    adapters_offered = Signal(list)  # names of the LoRA adapters the swarm's servers offer

    def __init__(self, trio_thread: TrioThread, model_path: Callable[[], Path], routes: RouteFactory,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._trio = trio_thread
        self._routes = routes
        self.writer = ReplyWriter(model_path, routes)
        self._job: Job | None = None
        self._request = 0
        self.card: ModelCard | None = None

    @property
    def busy(self) -> bool:
        """A reply is being written (one being stopped does not count)."""
        return self._job is not None and not self._job.cancelled

    @Slot()
    def load(self) -> None:
        """Load the tokenizer and head in the background (emits `ready`, or `failed` with id 0)."""

        async def load() -> ModelCard:
            return (await self.writer.model()).card

        self._trio.spawn(load, on_done=self._set_card, on_error=lambda e: self.failed.emit(0, _describe(e)))

    def use_model(self, model_path: Callable[[], Path]) -> None:
        """Write the next replies with another model (a reply being written finishes with its own). The
        adapter is asked for by name again (the picker drops it unless the new model's servers offer it);
        tuned prompts belong to one model, so they are dropped."""
        old, self.writer = self.writer, ReplyWriter(model_path, self._routes)
        self.writer.adapter = old.adapter
        self.card = None
        if old.tuned is not None:
            self.tuned_chosen.emit(None)
        self.load()

    @Slot(object)
    def choose_tuned(self, path: Path | None) -> None:
        """Check `path` against the model in the background; `tuned_chosen` or `tuned_refused` follows."""
        self._trio.spawn(self.writer.choose_tuned, path, on_done=lambda _: self.tuned_chosen.emit(path),
                         on_error=lambda exc: self.tuned_refused.emit(_describe(exc)))

    @Slot(object)
    def choose_adapter(self, name: str | None) -> None:
        """The LoRA adapter the next replies use (None: the base model)."""
        self.writer.adapter = name or None

    @Slot()
    def find_adapters(self) -> None:
        """Ask the swarm which adapters its servers offer; `adapters_offered` follows (empty if unknown).
        Nothing once the network thread has stopped (a late model card reaching a closing window)."""
        if not self._trio.running:
            return
        self._trio.spawn(self.writer.offered_adapters, on_done=lambda names: self.adapters_offered.emit(list(names)),
                         on_error=lambda exc: self.adapters_offered.emit([]))

    def measure(self, messages: list[dict[str, str]]) -> None:
        """Report how much of the context `messages` fill (`context_usage`), in the background
        (nothing once the network thread has stopped)."""
        if not self._trio.running:
            return

        async def count() -> tuple[int, int]:
            model = await self.writer.model()
            return len(model.prompt_ids(messages)), model.card.context_length

        def done(result: tuple[int, int]) -> None:
            if not self.busy:  # a streaming reply reports its own, newer count
                self.context_usage.emit(*result)

        self._trio.spawn(count, on_done=done, on_error=lambda exc: None)  # the next reply says what is wrong

    def generate(self, messages: list[dict[str, str]], sampling: SamplingParams) -> int:
        """Start a reply to `messages` ({"role", "content"}); returns the request id used in signals."""
        if self.busy:
            raise ChatBackendError("a reply is already being written; stop it first")
        sampling.validated()
        self._request += 1
        rid = self._request
        post = self._trio.post
        speed = ReplySpeed()
        events = ReplyEvents(
            on_route=lambda hops: post(lambda: self.route_changed.emit(list(hops))),
            on_paths=lambda paths: post(lambda: self.paths_changed.emit(dict(paths))),
            on_reroute=lambda event, hops: post(lambda: self._reroute(event, hops)),
            on_wait=lambda event: post(lambda: self.notice.emit(plain_event(event))),
            on_text=lambda text: post(lambda: self.token.emit(rid, text)),
            on_usage=lambda used, limit: (speed.saw(used), post(lambda: self.context_usage.emit(used, limit))),
        )

        def done(reply) -> None:
            self.reply_stats.emit(rid, speed.describe())
            self._end(rid, reply.finish_reason)

        self._job = self._trio.spawn(
            self.writer.write, list(messages), sampling, events,
            on_done=done,
            on_error=lambda exc: self._fail(rid, exc),
            on_cancelled=lambda: self._end(rid, "stopped"),
        )
        return rid

    @Slot()
    def stop(self) -> None:
        """Stop the reply being written; `finished(id, "stopped")` follows."""
        if self._job is not None:
            self._job.cancel()

    def _end(self, rid: int, reason: str) -> None:
        if rid == self._request:  # a stopped reply may end after the next one started
            self._job = None
        self.finished.emit(rid, reason)

    def _fail(self, rid: int, exc: BaseException) -> None:
        if rid == self._request:
            self._job = None
        self.failed.emit(rid, _describe(exc))

    def _set_card(self, card: ModelCard) -> None:
        self.card = card
        self.ready.emit(card)

    def _reroute(self, event: FailoverEvent, hops: list[RouteHop]) -> None:
        self.rerouted.emit(plain_event(event), describe_event(event))
        self.route_changed.emit(list(hops))

    def shutdown(self) -> None:
        self.stop()


class ReplySpeed:
    """Time to the first token and tokens per second of one reply, from its context-usage reports."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.prompt: int | None = None
        self.tokens = 0
        self.first: float | None = None
        self.last = self.started

    def saw(self, used: int) -> None:
        if self.prompt is None:
            self.prompt = used
            return
        self.tokens = used - self.prompt
        self.last = time.monotonic()
        if self.first is None and self.tokens > 0:
            self.first = self.last

    def describe(self) -> str:
        if self.first is None:
            return "no tokens"
        rate = (self.tokens - 1) / (self.last - self.first) if self.tokens > 1 and self.last > self.first else 0.0
        return (f"{self.tokens} token{'s' if self.tokens != 1 else ''} · {rate:.1f} tokens/s · "
                f"first token after {self.first - self.started:.2f} s")


def _describe(exc: BaseException) -> str:
    known = corolla_error_in(exc)
    if known is not None:
        return str(known)
    log.warning("generation failed", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"
