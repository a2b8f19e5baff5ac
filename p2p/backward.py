"""The backward protocol on a server node: stateless training requests for blocks of its span.

Two kinds of request, each one message in and one message out on its own stream:
- "forward":  hidden [batch, tokens, hidden] (+ deep prompts [blocks, P, hidden]) -> output hidden
- "backward": hidden, grad of the output (+ deep prompts) -> grad of hidden (+ grad of the prompts)

Nothing is stored between requests: backward recomputes the forward with a graph, so any server
holding the blocks can answer a retry. Weights never receive gradients. Requests are bounded by the
wire limits and by `max_tokens` (batch x tokens), which bounds the activation memory of a backward.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Protocol

import torch
import trio
from libp2p.abc import INetStream

from corolla.core.errors import CorollaError
from corolla.core.span import Span
from corolla.core.tuning.span_grad import MAX_TRAIN_TOKENS, check_request, span_backward, span_forward
from corolla.p2p.errors import BlockRangeError, ProtocolError
from corolla.p2p.fairness import FairCompute, peer_of
from corolla.p2p.names import blocks_text
from corolla.p2p.records import BlockRange
from corolla.p2p.wire import StreamGone, WireLimits, encode, error_frame, read_message, write_message

log = logging.getLogger("corolla.server.backward")

REQUEST_TIMEOUT = 30.0  # s to read one request (a large batch of hidden states is many MB)
WRITE_TIMEOUT = 30.0


class TrainingNode(Protocol):
    """What the service needs of a server node (read on every request: a node may change spans)."""

    span: Span
    limits: WireLimits

    @property
    def blocks(self) -> BlockRange: ...


class BackwardService:
    """Answers the backward protocol for a server node. `compute` is the node's fair compute turns:
    one computation at a time, inference steps and training requests alike."""

    def __init__(self, node: TrainingNode, compute: FairCompute, max_tokens: int = MAX_TRAIN_TOKENS) -> None:
        self.node = node
        self.compute = compute
        self.max_tokens = max_tokens
        # hidden states, their gradient and deep prompts: three tensors. The wire refuses what is far
        # too big before reading it; check_request then says exactly what is over (tokens, shapes).
        most = 4 * max_tokens * node.span.hidden_size * 4
        self.limits = dataclasses.replace(node.limits, max_tensors=3, max_tensor_bytes=most,
                                          max_payload_bytes=3 * most)
        self.requests = 0  # answered, for logs and tests

    async def handle(self, stream: INetStream) -> None:
        try:
            header, tensors = await read_message(stream, limits=self.limits, idle_timeout=REQUEST_TIMEOUT,
                                                 body_timeout=REQUEST_TIMEOUT)
            try:
                out = await self._answer(header, tensors, peer_of(stream))
                await write_message(stream, encode({"type": "result"}, out), timeout=WRITE_TIMEOUT)
                self.requests += 1
            except CorollaError as exc:
                await _reply_error(stream, exc)
        except ProtocolError as exc:
            await _reply_error(stream, exc)
        except (StreamGone, trio.TooSlowError):
            pass
        except Exception as exc:  # a bug must cost one request, never the server
            log.exception("backward request failed")
            await _reply_error(stream, exc)
        finally:
            with trio.move_on_after(1.0):
                try:
                    await stream.close()
                except Exception as exc:  # noqa: BLE001 - closing a dead stream fails in several ways
                    log.debug("closing a stream: %s", exc)

    async def _answer(self, header: dict[str, Any], tensors: list[torch.Tensor], peer: str) -> list[torch.Tensor]:
        kind = header.get("type")
        wanted = {"forward": (1, 2), "backward": (2, 3)}.get(kind)  # type: ignore[arg-type]
        if wanted is None or len(tensors) not in wanted:
            raise ProtocolError("expected a 'forward' message with hidden states (and deep prompts) or a "
                                "'backward' message with hidden states, their output's gradient (and deep prompts)")
        start, end = self._range(header)
        span = self.node.span.sub(start, end)
        hidden = tensors[0]
        prompts = tensors[-1] if len(tensors) == wanted[1] else None
        check_request(span, hidden, prompts, self.max_tokens)
        # One computation at a time with the node's inference steps: the cores are shared, and a
        # generating session's results must not depend on what else the server does.
        async with self.compute.turn(peer):  # in the server's fair order between peers
            if kind == "forward":
                out = await trio.to_thread.run_sync(span_forward, span, hidden, prompts)
                return [out]
            grad_hidden, grad_prompts = await trio.to_thread.run_sync(span_backward, span, hidden, tensors[1], prompts)
        return [grad_hidden] if grad_prompts is None else [grad_hidden, grad_prompts]

    def _range(self, header: dict[str, Any]) -> tuple[int, int]:
        blocks = self.node.blocks
        start, end = header.get("start", blocks.start), header.get("end", blocks.end)
        if not (isinstance(start, int) and isinstance(end, int)):
            raise ProtocolError("'start' and 'end' must be integers")
        if not (blocks.start <= start < end <= blocks.end):
            raise BlockRangeError(f"{blocks_text(start, end)} are not inside this server's span, "
                                  f"{blocks_text(blocks.start, blocks.end)}")
        return start, end


async def _reply_error(stream: INetStream, exc: BaseException) -> None:
    code = type(exc).__name__ if isinstance(exc, CorollaError) else "InternalError"
    try:
        await write_message(stream, error_frame(code, str(exc)), timeout=WRITE_TIMEOUT)
    except (StreamGone, trio.TooSlowError):
        pass
