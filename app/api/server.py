"""An OpenAI-compatible HTTP API on the swarm: /v1/models, /v1/chat/completions, /v1/completions.

Starlette (ASGI) served by Hypercorn on this process's trio loop. Each request is one reply through
app/chat/reply.py's ReplyWriter, so it decodes exactly as the chat and `corolla generate` do;
concurrent requests are concurrent sessions on the swarm. Streaming is server-sent events.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corolla.app.api.requests import ApiError, CompletionRequest, parse_request
from corolla.app.chat.reply import Reply, ReplyEvents, ReplyWriter
from corolla.app.errors import corolla_error_in
from corolla.core.generation import SamplingParams

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024  # bytes of JSON in one request
FINISH = {"eos": "stop", "stop": "stop", "length": "length"}


@dataclass
class ApiModel:
    """The one model this API serves: its name (as `corolla model info` says it) and defaults."""

    name: str
    writer: ReplyWriter
    defaults: SamplingParams


class CompletionsApi:
    def __init__(self, model: ApiModel, api_key: str | None = None) -> None:
        self.model = model
        self.api_key = api_key
        self.nursery: trio.Nursery | None = None  # set by serve(): where streamed replies run
        self.app = Starlette(routes=[
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
        ])

    async def models(self, request: Request) -> Response:
        return await self._guard(request, self._models)

    async def chat_completions(self, request: Request) -> Response:
        return await self._guard(request, lambda body: self._complete(body, chat=True))

    async def completions(self, request: Request) -> Response:
        return await self._guard(request, lambda body: self._complete(body, chat=False))

    async def _guard(self, request: Request, handle) -> Response:
        """Authorization, a readable body, and every error as an OpenAI error object."""
        try:
            if self.api_key is not None:
                given = request.headers.get("authorization", "")
                if not secrets.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                    raise ApiError("missing or wrong API key (send 'Authorization: Bearer KEY')", status=401,
                                   code="invalid_api_key")
            body = None
            if request.method == "POST":
                raw = await request.body()
                if len(raw) > MAX_BODY:
                    raise ApiError(f"the request body is over {MAX_BODY} bytes", status=413)
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise ApiError("the request body is not valid JSON") from None
            return await handle(body)
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except Exception as exc:  # noqa: BLE001 - a reply failed: tell the client, keep serving
            return JSONResponse(_failure(exc).body(), status_code=_failure(exc).status)

    async def _models(self, body: Any) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.model.name, "object": "model", "created": 0, "owned_by": "corolla"}]})

    async def _complete(self, body: Any, chat: bool) -> Response:
        req = parse_request(body, self.model.defaults, chat)
        if req.model not in (self.model.name, "default"):
            raise ApiError(f"model {req.model!r} is not served here; use {self.model.name!r} (see /v1/models)",
                           status=404, param="model", code="model_not_found")
        completion = Completion(self.model.name, chat)
        if req.stream:
            return StreamingResponse(self._stream(req, completion), media_type="text/event-stream")
        usage: list[int] = []
        reply = await self.model.writer.write(req.prompt, req.sampling,
                                              ReplyEvents(on_usage=lambda used, limit: usage.append(used)))
        return JSONResponse(completion.whole(reply, usage[0] if usage else 0))

    async def _stream(self, req: CompletionRequest, completion: Completion) -> AsyncIterator[str]:
        """Server-sent events: a chunk per piece of text, a last chunk with the finish reason, [DONE].

        The reply runs in the server's nursery (never inside this generator, which may be abandoned
        when the client goes away); leaving the generator cancels the reply."""
        send, receive = trio.open_memory_channel[tuple[str, Any]](math.inf)
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                try:
                    reply = await self.model.writer.write(req.prompt, req.sampling, ReplyEvents(
                        on_text=lambda text: send.send_nowait(("text", text))))
                    send.send_nowait(("end", reply))
                except Exception as exc:  # noqa: BLE001 - sent to the client as an error event
                    send.send_nowait(("error", exc))
            send.close()

        if self.nursery is None:
            raise ApiError("the API is not running", status=503)
        self.nursery.start_soon(run)
        try:
            if completion.chat:
                yield _event(completion.chunk({"role": "assistant", "content": ""}))
            async with receive:
                async for kind, value in receive:
                    if kind == "text":
                        yield _event(completion.chunk({"content": value} if completion.chat else value))
                    elif kind == "end":
                        yield _event(completion.chunk({} if completion.chat else "", FINISH[value.finish_reason]))
                    else:
                        yield _event(_failure(value).body())
            yield "data: [DONE]\n\n"
        finally:
            scope.cancel()


class Completion:
    """The response shapes of one completion (chat or text), whole or in chunks."""

    def __init__(self, model: str, chat: bool) -> None:
        self.model, self.chat = model, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    def whole(self, reply: Reply, prompt_tokens: int) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": FINISH[reply.finish_reason]}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": reply.text}
        else:
            choice.update(text=reply.text, logprobs=None)
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [choice],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": reply.tokens,
                          "total_tokens": prompt_tokens + reply.tokens}}

    def chunk(self, piece: dict[str, str] | str, finish_reason: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason}
        if self.chat:
            choice["delta"] = piece
        else:
            choice.update(text=piece, logprobs=None)
        return {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [choice]}


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _failure(exc: BaseException) -> ApiError:
    """What went wrong in a reply, as an API error: the swarm's own words, or an internal error."""
    if isinstance(exc, ApiError):
        return exc
    known = corolla_error_in(exc)
    if known is not None:
        return ApiError(str(known), status=503, kind="server_error", code="swarm_unavailable")
    log.warning("a reply failed", exc_info=exc)
    return ApiError(f"internal error: {type(exc).__name__}: {exc}", status=500, kind="server_error")


async def serve(api: CompletionsApi, host: str, port: int, *,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the API until cancelled; `task_status.started` gets the bound addresses (http://host:port)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("corolla.api.http")
    async with trio.open_nursery() as nursery:
        api.nursery = nursery
        binds = await nursery.start(lambda task_status: hypercorn_serve(api.app, config, task_status=task_status))
        task_status.started(binds)
