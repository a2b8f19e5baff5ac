"""A server node: serves one span of blocks on the info, inference and forward protocols.

Every stream runs inside one guard: a bad frame, a refused request or a bug ends that stream with an
error reply; nothing reaches libp2p's connection task. Peers share the server through fairness.py.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import torch
import trio
from libp2p.abc import INetStream

from corolla.core.dtypes import DTYPE_NAMES, ELEMENT_BYTES
from corolla.core.errors import CacheFullError, CorollaError, UnknownSessionError
from corolla.core.span import Span, SpanRuntime
from corolla.p2p.backward import BackwardService
from corolla.p2p.batching import StepBatcher
from corolla.p2p.errors import ProtocolError
from corolla.p2p.fairness import (
    FairCompute,
    InferenceTurns,
    PeerLimitError,
    PeerQuota,
    SessionExpiredError,
    SessionSlot,
    TooManySessionsError,
    peer_of,
)
from corolla.p2p.forward_requests import (
    FORWARD_CHUNK,
    MAX_REQUEST_TOKENS,
    REQUEST_TIMEOUT,
    ForwardRequests,
    check_inside,
    sub_span,
)
from corolla.p2p.links import ProbeService
from corolla.p2p.names import blocks_text
from corolla.p2p.records import (
    BACKWARD_PROTOCOL,
    FORWARD_PROTOCOL,
    INFERENCE_PROTOCOL,
    INFO_PROTOCOL,
    LEAVING,
    ONLINE,
    PROBE_PROTOCOL,
    PUSH_PROTOCOL,
    BlockRange,
    ServerInfo,
)
from corolla.p2p.steps import StepService, push_key_of
from corolla.p2p.wire import (
    StreamGone,
    WireLimits,
    close_stream,
    encode,
    error_frame,
    read_message,
    write_message,
)
from corolla.p2p.wire import is_int as _is_int

log = logging.getLogger("corolla.server")

SESSION_IDLE_TIMEOUT = 60.0  # s between steps before a session is dropped
RECLAIM_IDLE_S = 2.0  # s without a step after which a session's cache may go to a newcomer
WRITE_TIMEOUT = 10.0
INLINE_MAX_ELEMENTS = 16 * 1024  # hidden-state elements computed without a thread hand-off


class ServerLeavingError(CorollaError):
    """The server is shutting down and takes no new sessions."""


class ServerNode(ForwardRequests):
    """Protocol handlers around a SpanRuntime. Compute runs one step at a time, in fair turns."""

    def __init__(self, span: Span, model_name: str, model_hash: str, *, cache_tokens: int = 8192,
                 max_sessions: int = 16, limits: WireLimits | None = None,
                 session_idle_timeout: float = SESSION_IDLE_TIMEOUT, reclaim_idle_s: float = RECLAIM_IDLE_S,
                 peer_quota: PeerQuota | None = None, forward_chunk: int = FORWARD_CHUNK) -> None:
        self.span = span
        self.model_name, self.model_hash = model_name, model_hash
        self.cache_tokens = cache_tokens
        self.max_sessions = max_sessions
        # A step never needs more than MAX_REQUEST_TOKENS hidden states of the widest dtype.
        request_bytes = MAX_REQUEST_TOKENS * span.hidden_size * max(ELEMENT_BYTES.values())
        self.limits = limits or WireLimits(max_tensor_bytes=request_bytes, max_payload_bytes=2 * request_bytes,
                                           max_tensors=2, max_rank=3)  # a step's hidden states, deep prompts
        self.session_idle_timeout = session_idle_timeout
        self.reclaim_idle_s = reclaim_idle_s
        self.quota = peer_quota or PeerQuota.share_of(max_sessions, cache_tokens)
        self.forward_chunk = forward_chunk
        self.state = ONLINE
        self.peer_id = ""
        self.block_ms = 1.0
        self.declared_block_ms: float | None = None  # the owner's figure (--block-ms): never measured over
        self.reachability = "unknown"  # set by whoever runs the node, from its dial-back
        self.relays: list[str] = []
        self.nickname = ""  # the owner's name for this server (checked by names.check_nickname)
        self.model_blocks = 0  # blocks of the whole model, so clients can tell whether it is fully served
        self.next_rtt_ms: dict[str, float] = {}  # set by whoever runs the node (p2p/links.py)
        self.next_mbps: dict[str, float] = {}  # likewise
        self.probes = ProbeService()  # answers other servers measuring their links to this one
        self._runtimes: dict[tuple[int, int], SpanRuntime] = {}
        self._slots: dict[str, SessionSlot] = {}
        self._forwards: dict[str, int] = {}  # per peer: forward requests being served or waiting
        self._forward_turns: dict[str, trio.Semaphore] = {}
        self._compute = FairCompute()
        # concurrent sessions' steps share forward passes, in the fair order as one more user
        self.batcher = StepBatcher(InferenceTurns(self._compute))
        self.sessions_changed = trio.Event()
        self.tokens_served = self.sessions_served = 0  # since this node started (a volunteer's stats)
        self.max_request_tokens = MAX_REQUEST_TOKENS
        self.steps = StepService(self)  # every inference step, the client's or a pushed one

    # -- bookkeeping -------------------------------------------------------------------------
    @property
    def blocks(self) -> BlockRange:
        return BlockRange(self.span.start, self.span.end)

    @property
    def active_sessions(self) -> int:
        return len(self._slots)

    @property
    def free_cache_tokens(self) -> int:
        return self.cache_tokens - sum(s.tokens for s in self._slots.values())

    def _reclaimable(self) -> list[tuple[str, SessionSlot]]:
        """Sessions idle long enough to give their cache away, longest idle first."""
        now = time.monotonic()
        idle = [(sid, s) for sid, s in self._slots.items()
                if s.waiting is not None and now - s.last_used >= self.reclaim_idle_s]
        return sorted(idle, key=lambda item: item[1].last_used)

    def info(self) -> ServerInfo:
        n = len(self.blocks)
        idle = self._reclaimable()
        return ServerInfo(
            peer_id=self.peer_id, model_name=self.model_name, model_hash=self.model_hash,
            start=self.span.start, end=self.span.end, state=self.state,
            dtype=DTYPE_NAMES[self.span.dtype], quant=self.span.quant.value, hidden_size=self.span.hidden_size,
            block_ms=self.block_ms, throughput=1000.0 / max(self.block_ms * n, 1e-6),
            # what a newcomer can get: idle sessions' room is given away on demand
            free_cache_tokens=self.free_cache_tokens + sum(s.tokens for _, s in idle),
            active_sessions=self.active_sessions - len(idle), max_sessions=self.max_sessions,
            reachability=self.reachability, relays=list(self.relays), next_rtt_ms=dict(self.next_rtt_ms),
            next_mbps=dict(self.next_mbps),
            nickname=self.nickname, model_blocks=self.model_blocks,
            adapters=list(self.span.adapters.names),
        )

    def replace_span(self, span: Span) -> None:
        """Serve other blocks from now on (only once drained: sessions are never dropped)."""
        if self.active_sessions:
            raise CorollaError(f"{self.active_sessions} sessions are still open; drain them first")
        self.span = span
        self._runtimes.clear()

    def measure_throughput(self, steps: int = 8) -> float:
        """Time a decoding step (1 token after a short prefix); set and return ms per block (the
        owner's declared figure instead, where there is one)."""
        if self.declared_block_ms is not None:
            self.block_ms = self.declared_block_ms
            return self.block_ms
        rt = SpanRuntime(self.span, max_cache_tokens=64)
        x = torch.zeros(1, 1, self.span.hidden_size, dtype=self.span.dtype, device=self.span.device)
        rt.open_session("warmup", 16)
        rt.forward("warmup", torch.zeros(1, 4, self.span.hidden_size, dtype=self.span.dtype))
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            rt.forward("warmup", x)
            times.append(time.perf_counter() - t0)
        rt.close_session("warmup")
        self.block_ms = 1000 * sorted(times)[len(times) // 2] / len(self.blocks)
        return self.block_ms

    async def _run(self, fn, *args: Any) -> torch.Tensor:
        """Run compute: small steps inline (a thread hand-off costs more than they do on a busy
        machine), large ones in a worker thread so that the server keeps answering meanwhile."""
        hidden = args[-1]
        if hidden.numel() <= INLINE_MAX_ELEMENTS:
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args)

    def observe(self, tokens: int, seconds: float, num_blocks: int) -> None:
        """Keep block_ms current from real decoding steps (the start-up measurement may have run
        while the machine was busy)."""
        if tokens == 1 and self.declared_block_ms is None:
            self.block_ms = 0.9 * self.block_ms + 0.1 * 1000 * seconds / num_blocks

    def _runtime(self, start: int, end: int) -> SpanRuntime:
        key = (start, end)
        if key not in self._runtimes:
            # Each runtime may use the whole budget; the server enforces the shared budget itself.
            self._runtimes[key] = SpanRuntime(sub_span(self.span, start, end), max_cache_tokens=self.cache_tokens)
        return self._runtimes[key]

    def attach(self, host: Any) -> None:
        self.peer_id = host.get_id().to_string()
        host.set_stream_handler(INFO_PROTOCOL, self._guarded(self._info))
        host.set_stream_handler(INFERENCE_PROTOCOL, self._guarded(self._inference))
        host.set_stream_handler(FORWARD_PROTOCOL, self._guarded(self._forward))
        host.set_stream_handler(BACKWARD_PROTOCOL, BackwardService(self, self._compute).handle)
        self.steps.host = host
        host.set_stream_handler(PUSH_PROTOCOL, self._guarded(self.steps.serve_pushes))
        host.set_stream_handler(PROBE_PROTOCOL, self._guarded(self.probes.serve))

    # -- protocol handlers -------------------------------------------------------------------
    def _guarded(self, body: Callable[[INetStream, str], Awaitable[None]]) -> Callable[[INetStream], Awaitable[None]]:
        async def handler(stream: INetStream) -> None:
            await self.serve_stream(stream, body)
        return handler

    async def serve_stream(self, stream: INetStream, body: Callable[[INetStream, str], Awaitable[None]]) -> None:
        """Run one protocol's `body` on `stream`; whatever goes wrong ends the stream with an error
        reply (when it is still writable), and nothing escapes to the connection."""
        try:
            await body(stream, peer_of(stream))
        except (StreamGone, trio.TooSlowError):
            pass
        except CorollaError as exc:  # includes ProtocolError: the frames are out of step, so end the stream
            await self._reply_error(stream, exc)
        except Exception as exc:  # a bug must cost one stream, never the server
            log.exception("a %s stream failed", getattr(body, "__name__", "protocol"))
            await self._reply_error(stream, exc)
        finally:
            await close_stream(stream)

    async def read(self, stream: INetStream, idle: float) -> tuple[dict[str, Any], list[torch.Tensor]]:
        return await read_message(stream, limits=self.limits, idle_timeout=idle, body_timeout=REQUEST_TIMEOUT)

    async def _reply(self, stream: INetStream, frame: bytes) -> None:
        await write_message(stream, frame, timeout=WRITE_TIMEOUT)

    async def _reply_error(self, stream: INetStream, exc: BaseException) -> None:
        code = type(exc).__name__ if isinstance(exc, CorollaError) else "InternalError"
        try:
            await self._reply(stream, error_frame(code, str(exc)[:1000]))
        except (StreamGone, trio.TooSlowError):
            pass
        except Exception as exc2:  # noqa: BLE001 - a broken stream must not turn an error reply into a crash
            log.debug("error reply not sent: %s", exc2)

    async def _info(self, stream: INetStream, peer: str) -> None:
        await self.read(stream, REQUEST_TIMEOUT)
        await self._reply(stream, encode({"type": "info", "info": self.info().to_wire()}))

    async def _inference(self, stream: INetStream, peer: str) -> None:
        """One session: 'open', then 'step's (hidden in, hidden out; steps may also be pushed by the
        server before this one on the client's route, see steps.py), then 'close' or end of stream."""
        header, _ = await self.read(stream, REQUEST_TIMEOUT)
        key = push_key_of(header)
        sid, slot = self._open(header, peer)
        try:
            rt = slot.runtime
            self.steps.register(sid, stream, slot, key)
            await self._reply(stream, encode({"type": "opened", "session": sid,
                                              "start": rt.span.start, "end": rt.span.end}))
            while True:
                header, tensors = await self._next_step(stream, slot)
                kind = header.get("type")
                if kind == "close":
                    await self._reply(stream, encode({"type": "closed"}))
                    return
                try:
                    if kind != "step" or len(tensors) not in (1, 2):
                        raise ProtocolError(f"expected a 'step' message with one tensor (and deep prompts), got {kind!r}")
                    if header.get("session") != sid:
                        raise UnknownSessionError(f"session {header.get('session')!r} is not open on this stream")
                    await self.steps.client_step(sid, header, tensors[0], *tensors[1:])
                except CorollaError as exc:  # the frame was read whole: answer and keep the session
                    await self._reply_error(stream, exc)
        finally:
            self._close(sid, slot)
            await self.steps.forget(sid)

    async def _next_step(self, stream: INetStream, slot: SessionSlot) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """The session's next message; SessionExpiredError when it idles out or is reclaimed meanwhile."""
        with trio.CancelScope() as scope:
            slot.waiting = scope
            try:
                while True:
                    try:
                        return await self.read(stream, self.session_idle_timeout)
                    except trio.TooSlowError:
                        # steps pushed by the server before this one keep the session alive
                        if time.monotonic() - slot.last_used >= self.session_idle_timeout:
                            raise
            except trio.TooSlowError:
                raise SessionExpiredError(f"no step for {self.session_idle_timeout:g} s: the session expired; "
                                          "open a new one") from None
            finally:
                slot.waiting = None
        raise SessionExpiredError(slot.evicted)

    def _blocks_asked(self, header: dict[str, Any]) -> tuple[int, int]:
        start, end = header.get("start", self.span.start), header.get("end", self.span.end)
        if not (_is_int(start) and _is_int(end)):
            raise ProtocolError("'start' and 'end' must be integers")
        check_inside(self.span, start, end)
        return start, end

    def _open(self, header: dict[str, Any], peer: str) -> tuple[str, SessionSlot]:
        if header.get("type") != "open":
            raise ProtocolError(f"expected an 'open' message, got {header.get('type')!r}")
        if self.state != ONLINE:
            raise ServerLeavingError("this server is leaving the swarm; open the session elsewhere")
        max_length, batch = header.get("max_length"), header.get("batch_size", 1)
        if not (_is_int(max_length) and _is_int(batch) and max_length >= 1 and batch >= 1):
            raise ProtocolError("'max_length' and 'batch_size' must be positive integers")
        start, end = self._blocks_asked(header)
        wanted = max_length * batch
        mine = [s for s in self._slots.values() if s.peer == peer]
        if len(mine) >= self.quota.sessions:
            raise PeerLimitError(f"a peer may hold at most {self.quota.sessions} sessions here; close one first")
        if wanted + sum(s.tokens for s in mine) > self.quota.cache_tokens:
            raise PeerLimitError(f"a peer may reserve at most {self.quota.cache_tokens} cache tokens here; "
                                 f"this session asks {wanted}")
        self._reclaim(wanted)
        if self.active_sessions >= self.max_sessions:
            raise TooManySessionsError(f"this server already serves {self.max_sessions} sessions")
        if wanted > self.free_cache_tokens:
            raise CacheFullError(f"session needs {wanted} cache tokens but only {self.free_cache_tokens} of "
                                 f"{self.cache_tokens} are free; try a shorter max length or another server")
        rt = self._runtime(start, end)
        sid = uuid.uuid4().hex
        rt.open_session(sid, max_length, batch, header.get("adapter"))  # an unknown adapter is refused there
        slot = self._slots[sid] = SessionSlot(peer, wanted, rt, time.monotonic())
        self.sessions_served += 1
        log.info("session opened %s %s max_length %d (%d active)",
                 sid[:8], blocks_text(start, end), max_length, self.active_sessions)
        self._notify()
        return sid, slot

    def _reclaim(self, wanted: int) -> None:
        """Make room for a session of `wanted` tokens by ending idle sessions, longest idle first."""
        for sid, slot in self._reclaimable():
            if wanted <= self.free_cache_tokens and self.active_sessions < self.max_sessions:
                return
            slot.evicted = (f"the session sat idle for {time.monotonic() - slot.last_used:.1f} s while another "
                            "peer needed its cache; open a new one (replay the inputs)")
            self._close(sid, slot)
            if slot.waiting is not None:
                slot.waiting.cancel()

    def _close(self, sid: str, slot: SessionSlot) -> None:
        if self._slots.pop(sid, None) is None:
            return
        try:
            slot.runtime.close_session(sid)
        except UnknownSessionError:
            pass
        self.batcher.forget(sid)
        log.info("session closed %s (%d active)%s", sid[:8], self.active_sessions,
                 " - reclaimed while idle" if slot.evicted else "")
        self._notify()

    def _notify(self) -> None:
        self.sessions_changed.set()
        self.sessions_changed = trio.Event()

    async def leave(self, drain_timeout: float) -> None:
        """Take no new sessions; wait up to `drain_timeout` s for open ones to finish."""
        self.state = LEAVING
        with trio.move_on_after(drain_timeout):
            while self.active_sessions:
                await self.sessions_changed.wait()

