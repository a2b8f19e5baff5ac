"""Stateless forward requests on a server node (the forward protocol): a spot check's recomputation
or a training client's forward, computed a chunk of tokens per compute turn so that decoding
sessions are not held up behind a long request (p2p/server.py's ServerNode inherits this)."""

from __future__ import annotations

import functools
import time

import torch
import trio
from libp2p.abc import INetStream

from corolla.core.errors import ShapeError
from corolla.core.span import Span, SpanRuntime
from corolla.p2p.errors import BlockRangeError, ProtocolError
from corolla.p2p.fairness import PeerLimitError
from corolla.p2p.names import blocks_text
from corolla.p2p.wire import encode

REQUEST_TIMEOUT = 10.0  # s for one whole message once it has started
FORWARD_CHUNK = 8  # tokens of a forward request computed per turn, so that others get turns between
DECODE_SHARE = 8.0  # between chunks, a long forward waits up to this many times the last one for decoding
MAX_REQUEST_TOKENS = 4096  # tokens (x batch) one forward request or step may carry


def check_inside(span: Span, start: int, end: int) -> None:
    """Raise BlockRangeError unless blocks [start, end) lie inside `span` (the one range check)."""
    if not (span.start <= start < end <= span.end):
        raise BlockRangeError(f"{blocks_text(start, end)} are not inside this server's span, "
                              f"{blocks_text(span.start, span.end)}")


def sub_span(span: Span, start: int, end: int) -> Span:
    """Blocks [start, end) of this server's span, sharing its weights (a hop may use any part)."""
    check_inside(span, start, end)
    return span.sub(start, end)


class ForwardRequests:
    """The forward protocol's handler; the node provides span, quota, compute turns and replies."""

    async def _forward(self, stream: INetStream, peer: str) -> None:
        """One stateless request: hidden states through blocks [start, end) of this span, computed a
        chunk of tokens per compute turn. A peer's requests beyond its quota wait unread (the stream's
        flow control holds its sender back); beyond twice the quota they are refused."""
        waiting = self._forwards.get(peer, 0)
        if waiting >= 2 * self.quota.forwards:
            raise PeerLimitError(f"at most {self.quota.forwards} forward request(s) per peer at once; "
                                 "wait for the previous answers")
        self._forwards[peer] = waiting + 1
        turn = self._forward_turns.setdefault(peer, trio.Semaphore(self.quota.forwards))
        try:
            async with turn:
                header, tensors = await self.read(stream, REQUEST_TIMEOUT)
                if header.get("type") != "forward" or len(tensors) != 1:
                    raise ProtocolError("expected a 'forward' message with one tensor")
                start, end = self._blocks_asked(header)
                x, adapter = tensors[0], header.get("adapter")  # a spot check of a session with an adapter
                self.span.check_hidden(x)
                self.span.adapters.check(adapter)
                if x.shape[0] * x.shape[1] > MAX_REQUEST_TOKENS:
                    raise ShapeError(f"a forward request may carry at most {MAX_REQUEST_TOKENS} tokens (x batch)")
                out = await self._chunked_forward(sub_span(self.span, start, end), x, peer, adapter)
        finally:
            self._forwards[peer] -= 1
            if not self._forwards[peer]:
                del self._forwards[peer], self._forward_turns[peer]
        await self._reply(stream, encode({"type": "result"}, [out]))

    async def _chunked_forward(self, span: Span, x: torch.Tensor, peer: str, adapter: str | None) -> torch.Tensor:
        if x.shape[1] <= self.forward_chunk:
            async with self._compute.turn(peer):
                return await self._run(functools.partial(span.forward, adapter=adapter), x)
        rt = SpanRuntime(span, max_cache_tokens=x.shape[0] * x.shape[1])
        rt.open_session("forward", x.shape[1], x.shape[0], adapter)
        outs, last = [], 0.0
        for i in range(0, x.shape[1], self.forward_chunk):
            # Decoding sessions go first, but a long request still gets >= 1/(1 + DECODE_SHARE) of the time.
            await self.batcher.make_way(DECODE_SHARE * last)
            async with self._compute.turn(peer):
                t0, chunk = time.perf_counter(), x[:, i:i + self.forward_chunk]
                outs.append(await trio.to_thread.run_sync(rt.forward, "forward", chunk))
                last = time.perf_counter() - t0
        return torch.cat(outs, dim=1)

