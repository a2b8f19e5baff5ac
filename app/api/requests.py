"""OpenAI-shaped requests, checked once: what a client sent, as Corolla's sampling and prompt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corolla.core.errors import CorollaError
from corolla.core.generation import MAX_NEW_TOKENS, SamplingError, SamplingParams

ROLES = ("system", "user", "assistant")


class ApiError(CorollaError):
    """A request the API refuses; becomes an OpenAI error object with this HTTP status."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.kind, self.code = status, param, kind, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompt: list[dict[str, str]] | str  # messages (chat) or a text to complete
    sampling: SamplingParams
    stream: bool


def parse_request(body: Any, defaults: SamplingParams, chat: bool) -> CompletionRequest:
    """Check a /v1/chat/completions (chat) or /v1/completions body; ApiError naming the bad field."""
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError("'model' is required: the name from /v1/models, or \"default\"", param="model")
    if chat:
        prompt: list[dict[str, str]] | str = _messages(body.get("messages"))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError("'prompt' must be a non-empty string", param="prompt")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError("'stream' must be true or false", param="stream")
    if body.get("n", 1) != 1:
        raise ApiError("only n=1 is supported", param="n")
    changes: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        changes["max_new_tokens"] = max_tokens
    else:
        changes["max_new_tokens"] = min(defaults.max_new_tokens, MAX_NEW_TOKENS)
    for name in ("temperature", "top_p", "seed"):
        if body.get(name) is not None:
            changes[name] = body[name]
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 4:
            raise ApiError("'stop' must be a string or a list of at most 4 strings", param="stop")
        changes["stop"] = tuple(stops)
    try:
        sampling = defaults.replace(**changes).validated()
    except SamplingError as exc:
        raise ApiError(str(exc), param=_param_of(str(exc))) from None
    return CompletionRequest(model, prompt, sampling, stream)


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ApiError("'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ApiError(f"messages[{i}] needs a role of {', '.join(ROLES)}", param=f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # the list-of-parts form: text parts only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ApiError(f"messages[{i}].content: only text parts are supported",
                               param=f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(f"messages[{i}].content must be a string", param=f"messages[{i}].content")
        out.append({"role": m["role"], "content": content})
    return out


def _param_of(message: str) -> str | None:
    for words, param in (("temperature", "temperature"), ("top-p", "top_p"), ("max new tokens", "max_tokens"),
                         ("seed", "seed"), ("stop", "stop")):
        if message.startswith(words):
            return param
    return None
