"""What the chat window talks to: it streams a reply's text, stops it, and reports the route.

Everything slow (loading the head and tokenizer, every network step) runs in the trio thread;
results come back to the GUI thread as Qt signals. One reply streams at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio
from PySide6.QtCore import QObject, Signal, Slot

from corolla.app.errors import ChatBackendError, corolla_error_in
from corolla.app.settings import Sampling
from corolla.app.swarm.route import Hop, RouteFactory, RouteListener
from corolla.core.generation import Decoder, SamplingParams, chat_prompt_ids
from corolla.ui.bridge.trio_thread import Job, TrioThread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCard:
    name: str
    num_blocks: int
    context_length: int


class ClientModel:
    """The client's share of the model: tokenizer and head (embeddings, final norm, LM head)."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer

        from corolla.core.head import ClientHead

        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.head = ClientHead.load(path)
        config = self.head.config
        self.card = ModelCard(
            name=path.name,
            num_blocks=int(config.num_hidden_layers),
            context_length=int(getattr(config, "max_position_embeddings", 2048) or 2048),
        )


def sampling_params(s: Sampling, seed: int | None = None) -> SamplingParams:
    """The chat's sampling settings as core's SamplingParams (temperature 0 means greedy)."""
    return SamplingParams(
        max_new_tokens=s.max_new_tokens,
        greedy=s.temperature == 0.0,
        temperature=s.temperature if s.temperature > 0 else 1.0,
        top_k=s.top_k,
        top_p=s.top_p,
        repetition_penalty=s.repetition_penalty,
        seed=seed,
    )


class ChatBackend(QObject):
    ready = Signal(object)  # ModelCard, once the tokenizer and head are loaded
    token = Signal(int, str)  # request id, text to append
    finished = Signal(int, str)  # request id, "eos" | "length" | "stop" | "stopped"
    failed = Signal(int, str)  # request id, what went wrong, for the user
    route_changed = Signal(list)  # list[Hop]
    rerouted = Signal(str)  # a notice for the user
    notice = Signal(str)  # something the user should know (waiting for missing blocks, ...)
    context_usage = Signal(int, int)  # tokens used, context length

    def __init__(self, trio_thread: TrioThread, model_path: Callable[[], Path], routes: RouteFactory,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._trio = trio_thread
        self._model_path = model_path
        self._routes = routes
        self._model: ClientModel | None = None
        self._model_lock: trio.Lock | None = None
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
        self._trio.spawn(self._ensure_model, on_error=lambda e: self.failed.emit(0, _describe(e)))

    def measure(self, messages: list[dict[str, str]]) -> None:
        """Report how much of the context `messages` fill (`context_usage`), in the background."""

        async def count() -> tuple[int, int]:
            model = await self._ensure_model()
            return len(chat_prompt_ids(model.tokenizer, messages)), model.card.context_length

        def done(result: tuple[int, int]) -> None:
            if not self.busy:  # a streaming reply reports its own, newer count
                self.context_usage.emit(*result)

        self._trio.spawn(count, on_done=done, on_error=lambda exc: None)  # the next reply says what is wrong

    def generate(self, messages: list[dict[str, str]], sampling: Sampling, seed: int | None = None) -> int:
        """Start a reply to `messages` ({"role", "content"}); returns the request id used in signals."""
        if self.busy:
            raise ChatBackendError("a reply is already being written; stop it first")
        sampling.validated()
        self._request += 1
        rid = self._request
        self._job = self._trio.spawn(
            self._generate, rid, list(messages), sampling_params(sampling, seed),
            on_done=lambda reason: self._end(rid, reason),
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

    async def _ensure_model(self) -> ClientModel:
        if self._model_lock is None:
            self._model_lock = trio.Lock()
        async with self._model_lock:
            if self._model is None:
                path = await trio.to_thread.run_sync(self._model_path)
                self._model = await trio.to_thread.run_sync(ClientModel, path)
                card = self._model.card
                self._trio.post(lambda: self._set_card(card))
        return self._model

    def _set_card(self, card: ModelCard) -> None:
        self.card = card
        self.ready.emit(card)

    async def _generate(self, rid: int, messages: list[dict[str, str]], params: SamplingParams) -> str:
        model = await self._ensure_model()
        prompt = chat_prompt_ids(model.tokenizer, messages)
        limit = model.card.context_length
        if len(prompt) + 1 > limit:
            raise ChatBackendError(
                f"the conversation is {len(prompt)} tokens, over the model's context of {limit}; "
                "start a new conversation or delete old messages"
            )
        params.max_new_tokens = min(params.max_new_tokens, limit - len(prompt))
        post = self._trio.post
        used = len(prompt)
        post(lambda: self.context_usage.emit(used, limit))

        def on_text(text: str) -> None:
            post(lambda: self.token.emit(rid, text))

        listener = RouteListener(
            on_route=lambda hops: post(lambda: self.route_changed.emit(list(hops))),
            on_reroute=lambda notice, hops: post(lambda: self._reroute(notice, hops)),
            on_notice=lambda text: post(lambda: self.notice.emit(text)),
        )
        decoder = Decoder(model.head, model.tokenizer, params, prompt, on_text=on_text)
        async with self._routes.open(decoder.max_length, listener) as route:
            hidden = decoder.start()
            while hidden is not None:
                out = await route.forward(hidden)
                hidden = await trio.to_thread.run_sync(decoder.advance, out)
                n = len(prompt) + len(decoder.token_ids)
                post(lambda n=n: self.context_usage.emit(n, limit))
        return decoder.finish_reason or "eos"

    def _reroute(self, notice: str, hops: list[Hop]) -> None:
        self.rerouted.emit(notice)
        self.route_changed.emit(list(hops))

    def shutdown(self) -> None:
        self.stop()


def _describe(exc: BaseException) -> str:
    known = corolla_error_in(exc)
    if known is not None:
        return str(known)
    log.warning("generation failed", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"
