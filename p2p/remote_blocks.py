"""A route of remote spans as a differentiable module: forward and backward through the swarm.

`RemoteBlocks` (async, trio) runs stateless forward and backward requests over the backward
protocol, segment by segment, retrying a failed segment on other servers: nothing lives on a
server between requests, so any server holding the blocks can answer. `RemoteSequential` wraps it
as a torch `nn.Module` (an autograd Function) for a training loop that runs outside the event loop
(in a worker thread, or the main thread while trio runs in another): torch optimizers, batches > 1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import trio
from torch import nn

from corolla.p2p.client import SwarmClient, one_request
from corolla.p2p.errors import NoRouteError, PeerUnavailableError, ProtocolError, RemoteError, SwarmError
from corolla.p2p.names import blocks_text, short_id
from corolla.p2p.records import BACKWARD_PROTOCOL
from corolla.p2p.routing import RouteHop, plan_route
from corolla.p2p.session import HopFailure
from corolla.p2p.wire import DTYPES, StreamGone, encode

log = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0  # s for one request's answer (a backward recomputes the forward)
TIMEOUT_PER_KTOKEN = 10.0  # s added per 1000 tokens (batch x length) of a request
CONNECT_TIMEOUT = 5.0
MAX_ATTEMPTS = 4  # servers tried for one segment before giving up
ROUTE_WAIT = 30.0  # s to wait for servers to cover missing blocks
# Errors every server would give: retrying elsewhere cannot help.
CLIENT_FAULTS = {"ShapeError", "DtypeError", "ProtocolError", "MessageTooLargeError", "TooManyTokensError",
                 "BlockRangeError"}


@dataclass(frozen=True)
class Segment:
    """Blocks [start, end) ran on some server with `inputs`: what their backward needs again."""

    start: int
    end: int
    inputs: torch.Tensor


@dataclass
class RetryEvent:
    """A request for blocks [start, end) failed on `peer_id` (`reason`) and is retried elsewhere."""

    start: int
    end: int
    peer_id: str
    reason: str


class RemoteBlocks:
    """Every block of the model, through the swarm, for training (no sessions, no caches)."""

    def __init__(self, client: SwarmClient, *, timeout: float = CALL_TIMEOUT, max_attempts: int = MAX_ATTEMPTS,
                 route_wait: float = ROUTE_WAIT, on_retry: Callable[[RetryEvent], None] | None = None) -> None:
        self.client, self.timeout, self.max_attempts = client, timeout, max_attempts
        self.route_wait = route_wait
        self.on_retry = on_retry or (lambda event: None)
        self.calls = 0

    @property
    def num_blocks(self) -> int:
        return self.client.num_blocks

    async def forward(self, hidden: torch.Tensor, prompts: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, list[Segment]]:
        """Hidden states [batch, tokens, hidden] through every block (deep prompts [num_blocks, P,
        hidden] added before each block); the output and the segments a backward needs."""
        segments: list[Segment] = []
        x = await self._forward_range(0, self.num_blocks, hidden, prompts, segments)
        return x, segments

    async def backward(self, segments: list[Segment], grad_output: torch.Tensor,
                       prompts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gradient of the inputs (and of the deep prompts) given the gradient of the output."""
        grad = grad_output
        prompt_grads: list[torch.Tensor] = []
        for seg in reversed(segments):
            grad, gp = await self._backward_segment(seg, grad, prompts)
            if gp is not None:
                prompt_grads.insert(0, gp)
        return grad, (torch.cat(prompt_grads) if prompt_grads else None)

    # -- segments ----------------------------------------------------------------------------
    async def _forward_range(self, start: int, end: int, x: torch.Tensor, prompts: torch.Tensor | None,
                             segments: list[Segment]) -> torch.Tensor:
        attempts = 0
        while start < end:
            route = await self.route(start, end)
            try:
                for hop in route:
                    out = await self._call(hop, "forward", [x, *_part(prompts, hop.start, hop.end)])
                    segments.append(Segment(hop.start, hop.end, x))
                    x, start = out[0], hop.end
            except HopFailure as failure:
                attempts = self._failed(failure, start, end, attempts)
        return x

    async def _backward_segment(self, seg: Segment, grad: torch.Tensor, prompts: torch.Tensor | None
                                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backward through blocks [seg.start, seg.end). If no single server holds them all any
        more, a forward over the new hops first rebuilds the inputs at their boundaries."""
        attempts = 0
        while True:
            route = await self.route(seg.start, seg.end)
            try:
                inputs = [seg.inputs]
                for hop in route[:-1]:
                    inputs.append((await self._call(hop, "forward", [inputs[-1], *_part(prompts, hop.start,
                                                                                          hop.end)]))[0])
                prompt_grads: list[torch.Tensor] = []
                for hop, x in zip(reversed(route), reversed(inputs), strict=True):
                    out = await self._call(hop, "backward", [x, grad, *_part(prompts, hop.start, hop.end)])
                    grad = out[0]
                    if prompts is not None:
                        prompt_grads.insert(0, out[1])
                return grad, (torch.cat(prompt_grads) if prompt_grads else None)
            except HopFailure as failure:
                attempts = self._failed(failure, seg.start, seg.end, attempts)

    def _failed(self, failure: HopFailure, start: int, end: int, attempts: int) -> int:
        if failure.fatal:
            raise SwarmError(f"server {short_id(failure.peer_id)} refused the request: {failure.reason}") from failure.cause
        attempts += 1
        if attempts >= self.max_attempts:
            raise SwarmError(f"{blocks_text(start, end)} failed on {attempts} servers; last: {failure.reason}")
        seconds = self.client.ban(failure.peer_id)
        log.warning("server %s failed (%s); banned for %.0f s, retrying %s elsewhere",
                    short_id(failure.peer_id), failure.reason, seconds, blocks_text(start, end))
        self.on_retry(RetryEvent(start, end, failure.peer_id, failure.reason))
        return attempts

    async def route(self, start: int, end: int) -> list[RouteHop]:
        """Servers for blocks [start, end) now, waiting up to `route_wait` s for missing blocks."""
        waited_since: float | None = None
        while True:
            servers = await self.client.servers(rediscover=waited_since is not None)
            try:
                return plan_route(servers, start, end, cache_tokens=0, model=self.client.model_name)
            except NoRouteError:
                now = time.monotonic()
                waited_since = waited_since or now
                if now - waited_since >= self.route_wait:
                    raise
                await trio.sleep(1.0)

    async def _call(self, hop: RouteHop, kind: str, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """One request to one server; HopFailure when it does not answer well."""
        dtype = DTYPES.get(hop.server.dtype, torch.float32)
        sent = [t.detach().to(dtype) for t in tensors]
        timeout = self.timeout + TIMEOUT_PER_KTOKEN * tensors[0].shape[0] * tensors[0].shape[1] / 1000
        self.calls += 1
        try:
            header, out = await one_request(self.client.peer, hop.peer_id, BACKWARD_PROTOCOL,
                                            encode({"type": kind, "start": hop.start, "end": hop.end}, sent),
                                            timeout, connect_timeout=CONNECT_TIMEOUT)
        except (PeerUnavailableError, StreamGone, trio.TooSlowError, ProtocolError) as exc:
            reason = "timed out" if isinstance(exc, trio.TooSlowError) else (str(exc) or type(exc).__name__)
            raise HopFailure(hop.peer_id, f"{kind}: {reason}", cause=exc) from None
        if header.get("type") == "error":
            code = str(header.get("code"))
            raise HopFailure(hop.peer_id, f"{code}: {header.get('message')}", fatal=code in CLIENT_FAULTS,
                             cause=RemoteError(code, str(header.get("message"))))
        # forward answers the output; backward the gradients of the inputs (and of the prompts)
        like = tensors[:1] + (tensors[2:] if kind == "backward" else [])
        shapes = [list(t.shape) for t in like]
        if header.get("type") != "result" or [list(t.shape) for t in out] != shapes:
            raise HopFailure(hop.peer_id, f"{kind}: unexpected reply {header.get('type')!r} with "
                                          f"{[list(t.shape) for t in out]}, expected {shapes}")
        if not all(torch.isfinite(t).all() for t in out):
            raise HopFailure(hop.peer_id, f"{kind}: the reply has NaN or inf values")
        return [t.to(src.dtype) for t, src in zip(out, like, strict=True)]


def _part(prompts: torch.Tensor | None, start: int, end: int) -> list[torch.Tensor]:
    return [] if prompts is None else [prompts[start:end]]


class _ThroughSwarm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, prompts: torch.Tensor | None, module: RemoteSequential
                ) -> torch.Tensor:
        out, segments = module.call(module.blocks.forward, hidden.detach(),
                                    None if prompts is None else prompts.detach())
        ctx.module, ctx.segments = module, segments
        ctx.prompts = None if prompts is None else prompts.detach()
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        module = ctx.module
        grad_hidden, grad_prompts = module.call(module.blocks.backward, ctx.segments, grad_output.contiguous(),
                                                ctx.prompts)
        return grad_hidden, grad_prompts, None


class RemoteSequential(nn.Module):
    """`RemoteBlocks` as a local module: `module(hidden, deep_prompts)` with autograd. Call it from a
    thread that is not the event loop's; requests run in the trio loop of `token`."""

    def __init__(self, blocks: RemoteBlocks, token: trio.lowlevel.TrioToken) -> None:
        super().__init__()
        self.blocks, self.token = blocks, token

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def forward(self, hidden: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        return _ThroughSwarm.apply(hidden, prompts, self)
