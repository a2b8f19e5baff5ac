"""Writing a reply: prompt -> route -> tokens and events -> finished. The one place that decodes.

Qt-free and async (trio). The chat window's Qt adapter (ui/bridge/chat_backend.py), the terminal
chat and `corolla generate` all call `ReplyWriter.write`; where the blocks run is the route
factory's business (spans in this process, or servers of the swarm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from corolla.app.errors import ChatBackendError
from corolla.app.swarm.route import RouteFactory, RouteListener
from corolla.core.generation import Decoder, SamplingParams, chat_prompt_ids, decode


@dataclass(frozen=True)
class ModelCard:
    name: str
    num_blocks: int
    context_length: int  # tokens


class ClientModel:
    """The client's share of the model: tokenizer and head (embeddings, final norm, LM head)."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        from transformers import AutoTokenizer

        from corolla.core.head import ClientHead

        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.head = ClientHead.load(path, device=device)
        config = self.head.config
        self.card = ModelCard(
            name=path.name,
            num_blocks=int(config.num_hidden_layers),
            context_length=int(getattr(config, "max_position_embeddings", 2048) or 2048),
        )

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """A conversation ({"role", "content"} each) through the chat template, ready for the reply."""
        return chat_prompt_ids(self.tokenizer, messages)

    def text_ids(self, text: str) -> list[int]:
        """A plain prompt to complete, as token ids."""
        return list(self.tokenizer(text).input_ids)


@dataclass(frozen=True)
class ReplyEvents(RouteListener):
    """What a reply reports as it is written (all called in the event loop's thread)."""

    on_text: Callable[[str], None] = lambda text: None  # text to append
    on_usage: Callable[[int, int], None] = lambda used, limit: None  # tokens in the context, its size


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str  # "eos" | "length" | "stop"
    tokens: int
    rounds: int = 0  # round trips through the blocks (fewer than tokens with speculative decoding)


class ReplyWriter:
    """Writes replies with one model through one route factory. The model loads on first use."""

    def __init__(self, model_path: Callable[[], Path], routes: RouteFactory, *, head_device: str = "cpu",
                 speculative: int = 0, tuned: Path | None = None) -> None:
        self._model_path = model_path
        self.routes = routes
        self.head_device = head_device  # where the embeddings and LM head run: "cpu", "cuda", "auto"
        self.speculative = speculative  # guessed tokens per step (prompt lookup); 0: off
        self.tuned = tuned  # a tuned-prompts file (`corolla finetune`), checked against the model's hash
        self.adapter: str | None = None  # the LoRA adapter (by the name servers offer it under) replies use
        self._prefix = None
        self._model: ClientModel | None = None
        self._lock: trio.Lock | None = None

    async def model(self) -> ClientModel:
        """The tokenizer and head, loaded in a worker thread the first time."""
        if self._lock is None:
            self._lock = trio.Lock()
        async with self._lock:
            if self._model is None:
                path = await trio.to_thread.run_sync(self._model_path)
                model = await trio.to_thread.run_sync(ClientModel, path, self.head_device)
                if self.tuned is not None:  # before the model counts as loaded: a refused file stays refused
                    deep_ok = getattr(self.routes, "applies_deep_prompts", False)
                    self._prefix = await trio.to_thread.run_sync(_tuned_prefix, path, self.tuned, deep_ok)
                self._model = model
        return self._model

    async def choose_tuned(self, tuned: Path | None) -> None:
        """Use the tuned prompts in `tuned` for the next replies (None: none). A file made for another
        model raises ChatBackendError in plain words and the previous choice stays."""
        if self._lock is None:
            self._lock = trio.Lock()
        async with self._lock:
            prefix = None
            if tuned is not None:
                path = await trio.to_thread.run_sync(self._model_path)
                deep_ok = getattr(self.routes, "applies_deep_prompts", False)
                prefix = await trio.to_thread.run_sync(_tuned_prefix, path, tuned, deep_ok)
            self.tuned, self._prefix = tuned, prefix

    async def offered_adapters(self) -> list[str]:
        """The LoRA adapters the route's servers offer, by name (none for blocks run in this process)."""
        offered = getattr(self.routes, "offered_adapters", None)
        return [] if offered is None else await offered()

    async def write(self, prompt: list[dict[str, str]] | str, params: SamplingParams,
                    events: ReplyEvents | None = None) -> Reply:
        """Write the reply to a conversation (a list of messages) or the completion of a text."""
        events = events or ReplyEvents()
        model = await self.model()
        prompt_ids = model.text_ids(prompt) if isinstance(prompt, str) else model.prompt_ids(prompt)
        limit = model.card.context_length
        used = len(prompt_ids) + (0 if self._prefix is None else self._prefix.shape[0])
        if used + 1 > limit:
            raise ChatBackendError(
                f"the conversation is {len(prompt_ids)} tokens, over the model's context of {limit}; "
                "start a new conversation or delete old messages")
        params = params.replace(max_new_tokens=min(params.max_new_tokens, limit - used)).validated()
        events.on_usage(len(prompt_ids), limit)
        pending: list[str] = []  # the head runs in a worker thread; text is reported from the loop's

        def flush() -> None:
            if pending:
                text = "".join(pending)
                pending.clear()
                events.on_text(text)

        def after_token(decoder: Decoder) -> None:
            flush()
            events.on_usage(len(prompt_ids) + len(decoder.token_ids), limit)

        decoder = Decoder(model.head, model.tokenizer, params, prompt_ids, on_text=pending.append,
                          speculative=self.speculative, prefix=self._prefix)
        async with self.routes.open(decoder.max_length, events, self.adapter, prompt_tokens=used) as route:
            await decode(decoder, route.forward, offload=trio.to_thread.run_sync, on_step=after_token,
                         checked=getattr(route, "checked", None))  # a swarm route's spot checks
        flush()  # text held until the end (checks that could not decide) is released when decoding ends
        return Reply(decoder.text, decoder.finish_reason or "eos", len(decoder.token_ids), decoder.rounds)

    async def aclose(self) -> None:
        await self.routes.aclose()


def _tuned_prefix(model_path: Path, tuned: Path, deep_ok: bool = False):
    """The soft prompt of a tuned-prompts file made for this model (ChatBackendError otherwise)."""
    from corolla.core.model import ModelInfo
    from corolla.core.tuning.prompts import TunedFileError, TunedPrompts

    try:
        prompts = TunedPrompts.load(tuned, ModelInfo.load(model_path).hash)
    except TunedFileError as exc:
        raise ChatBackendError(str(exc)) from None
    if prompts.method != "prompt" and not deep_ok:
        raise ChatBackendError(f"{tuned} holds deep prompts, which this route cannot apply (the servers' "
                               "inference sessions take none); use `corolla generate --tuned`, or tune with "
                               "--method prompt")
    return prompts.input.detach()
