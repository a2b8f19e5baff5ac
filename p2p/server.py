"""A server node: serves one span of blocks on the info, inference and forward protocols."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import torch
import trio
from libp2p.abc import INetStream

from corolla.core.errors import CacheFullError, CorollaError, UnknownSessionError
from corolla.core.span import Span, SpanRuntime
from corolla.p2p.backward import BackwardService
from corolla.p2p.errors import BlockRangeError, ProtocolError
from corolla.p2p.records import (
    BACKWARD_PROTOCOL,
    FORWARD_PROTOCOL,
    INFERENCE_PROTOCOL,
    INFO_PROTOCOL,
    LEAVING,
    ONLINE,
    BlockRange,
    ServerInfo,
)
from corolla.p2p.wire import (
    DEFAULT_LIMITS,
    DTYPE_NAMES,
    StreamGone,
    WireLimits,
    encode,
    error_frame,
    read_message,
    write_message,
)

log = logging.getLogger("corolla.server")

REQUEST_TIMEOUT = 10.0  # s for one whole message once it has started
SESSION_IDLE_TIMEOUT = 300.0  # s between steps before a session is dropped
WRITE_TIMEOUT = 10.0
INLINE_MAX_ELEMENTS = 16 * 1024  # hidden-state elements computed without a thread hand-off


class ServerLeavingError(CorollaError):
    """The server is shutting down and takes no new sessions."""


class TooManySessionsError(CorollaError):
    """The server already serves as many sessions as it was told to."""


def sub_span(span: Span, start: int, end: int) -> Span:
    """Blocks [start, end) of this server's span, sharing its weights (a hop may use any part)."""
    if not (span.start <= start < end <= span.end):
        raise BlockRangeError(f"blocks {start}:{end} are not inside this server's span {span.start}:{span.end}")
    return span.sub(start, end)


class ServerNode:
    """Protocol handlers around a SpanRuntime. Compute runs in a worker thread, one step at a time."""

    def __init__(self, span: Span, model_name: str, model_hash: str, *, cache_tokens: int = 8192,
                 max_sessions: int = 16, limits: WireLimits = DEFAULT_LIMITS,
                 session_idle_timeout: float = SESSION_IDLE_TIMEOUT) -> None:
        self.span = span
        self.model_name, self.model_hash = model_name, model_hash
        self.cache_tokens = cache_tokens
        self.max_sessions = max_sessions
        self.limits = limits
        self.session_idle_timeout = session_idle_timeout
        self.state = ONLINE
        self.peer_id = ""
        self.block_ms = 1.0
        self._runtimes: dict[tuple[int, int], SpanRuntime] = {}
        self._reserved: dict[str, int] = {}
        self._compute = trio.Lock()
        self.sessions_changed = trio.Event()

    # -- bookkeeping -------------------------------------------------------------------------
    @property
    def blocks(self) -> BlockRange:
        return BlockRange(self.span.start, self.span.end)

    @property
    def active_sessions(self) -> int:
        return len(self._reserved)

    @property
    def free_cache_tokens(self) -> int:
        return self.cache_tokens - sum(self._reserved.values())

    def info(self) -> ServerInfo:
        n = len(self.blocks)
        return ServerInfo(
            peer_id=self.peer_id, model_name=self.model_name, model_hash=self.model_hash,
            start=self.span.start, end=self.span.end, state=self.state,
            dtype=DTYPE_NAMES[self.span.dtype], hidden_size=self.span.hidden_size,
            block_ms=self.block_ms, throughput=1000.0 / max(self.block_ms * n, 1e-6),
            free_cache_tokens=self.free_cache_tokens, active_sessions=self.active_sessions,
            max_sessions=self.max_sessions,
        )

    def replace_span(self, span: Span) -> None:
        """Serve other blocks from now on (only once drained: sessions are never dropped)."""
        if self.active_sessions:
            raise CorollaError(f"{self.active_sessions} sessions are still open; drain them first")
        self.span = span
        self._runtimes.clear()

    def measure_throughput(self, steps: int = 8) -> float:
        """Time a decoding step (1 token after a short prefix); set and return ms per block."""
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

    def _observe(self, tokens: int, seconds: float, num_blocks: int) -> None:
        """Keep block_ms current from real decoding steps (the start-up measurement may have run
        while the machine was busy)."""
        if tokens == 1:
            self.block_ms = 0.9 * self.block_ms + 0.1 * 1000 * seconds / num_blocks

    def _runtime(self, start: int, end: int) -> SpanRuntime:
        key = (start, end)
        if key not in self._runtimes:
            # Each runtime may use the whole budget; the server enforces the shared budget itself.
            self._runtimes[key] = SpanRuntime(sub_span(self.span, start, end), max_cache_tokens=self.cache_tokens)
        return self._runtimes[key]

    def attach(self, host: Any) -> None:
        self.peer_id = host.get_id().to_string()
        host.set_stream_handler(INFO_PROTOCOL, self.handle_info)
        host.set_stream_handler(INFERENCE_PROTOCOL, self.handle_inference)
        host.set_stream_handler(FORWARD_PROTOCOL, self.handle_forward)
        host.set_stream_handler(BACKWARD_PROTOCOL, BackwardService(self, self._compute).handle)

    # -- protocol handlers -------------------------------------------------------------------
    async def _read(self, stream: INetStream, idle: float) -> tuple[dict[str, Any], list[torch.Tensor]]:
        return await read_message(stream, limits=self.limits, idle_timeout=idle, body_timeout=REQUEST_TIMEOUT)

    async def _reply(self, stream: INetStream, frame: bytes) -> None:
        await write_message(stream, frame, timeout=WRITE_TIMEOUT)

    async def _reply_error(self, stream: INetStream, exc: BaseException) -> None:
        code = type(exc).__name__ if isinstance(exc, CorollaError) else "InternalError"
        try:
            await self._reply(stream, error_frame(code, str(exc)))
        except (StreamGone, trio.TooSlowError):
            pass

    async def handle_info(self, stream: INetStream) -> None:
        try:
            await self._read(stream, REQUEST_TIMEOUT)
            await self._reply(stream, encode({"type": "info", "info": self.info().to_wire()}))
        except ProtocolError as exc:
            await self._reply_error(stream, exc)
        except (StreamGone, trio.TooSlowError):
            pass
        finally:
            await _close(stream)

    async def handle_forward(self, stream: INetStream) -> None:
        """One stateless request: hidden states through blocks [start, end) of this span."""
        try:
            header, tensors = await self._read(stream, REQUEST_TIMEOUT)
            try:
                if header.get("type") != "forward" or len(tensors) != 1:
                    raise ProtocolError("expected a 'forward' message with one tensor")
                span = sub_span(self.span, *_range(header, self.blocks))
                async with self._compute:
                    out = await self._run(span.forward, tensors[0])
                await self._reply(stream, encode({"type": "result"}, [out]))
            except CorollaError as exc:
                await self._reply_error(stream, exc)
        except ProtocolError as exc:
            await self._reply_error(stream, exc)
        except (StreamGone, trio.TooSlowError):
            pass
        finally:
            await _close(stream)

    async def handle_inference(self, stream: INetStream) -> None:
        """One session: 'open', then 'step's (hidden in, hidden out), then 'close' or end of stream."""
        sid: str | None = None
        rt: SpanRuntime | None = None
        try:
            header, _ = await self._read(stream, REQUEST_TIMEOUT)
            try:
                sid, rt = self._open(header)
            except CorollaError as exc:
                await self._reply_error(stream, exc)
                return
            await self._reply(stream, encode({"type": "opened", "session": sid,
                                              "start": rt.span.start, "end": rt.span.end}))
            while True:
                header, tensors = await self._read(stream, self.session_idle_timeout)
                kind = header.get("type")
                if kind == "close":
                    await self._reply(stream, encode({"type": "closed"}))
                    return
                try:
                    if kind != "step" or len(tensors) != 1:
                        raise ProtocolError(f"expected a 'step' message with one tensor, got {kind!r}")
                    if header.get("session") != sid:
                        raise UnknownSessionError(f"session {header.get('session')!r} is not open on this stream")
                    async with self._compute:
                        t0 = time.perf_counter()
                        out = await self._run(rt.forward, sid, tensors[0])
                        seconds = time.perf_counter() - t0
                        self._observe(tensors[0].shape[1], seconds, len(rt.span.blocks))
                    reply = {"type": "result", "compute_ms": 1000 * seconds}
                    if self.state == LEAVING:
                        reply["leaving"] = True  # the client moves this session elsewhere at its leisure
                    await self._reply(stream, encode(reply, [out]))
                except CorollaError as exc:  # the frame was read whole: answer and keep the session
                    await self._reply_error(stream, exc)
        except ProtocolError as exc:  # the stream is out of step with the frames: answer and end it
            await self._reply_error(stream, exc)
        except (StreamGone, trio.TooSlowError):
            pass
        except Exception as exc:  # a bug must cost one session, never the server
            log.exception("session %s failed", sid)
            await self._reply_error(stream, exc)
        finally:
            if sid is not None and rt is not None:
                self._close(sid, rt)
            await _close(stream)

    def _open(self, header: dict[str, Any]) -> tuple[str, SpanRuntime]:
        if header.get("type") != "open":
            raise ProtocolError(f"expected an 'open' message, got {header.get('type')!r}")
        if self.state != ONLINE:
            raise ServerLeavingError("this server is leaving the swarm; open the session elsewhere")
        if self.active_sessions >= self.max_sessions:
            raise TooManySessionsError(f"this server already serves {self.max_sessions} sessions")
        max_length, batch = header.get("max_length"), header.get("batch_size", 1)
        if not (isinstance(max_length, int) and isinstance(batch, int)):
            raise ProtocolError("'max_length' and 'batch_size' must be integers")
        start, end = _range(header, self.blocks)
        wanted = max_length * batch
        if wanted > self.free_cache_tokens:
            raise CacheFullError(f"session needs {wanted} cache tokens but only {self.free_cache_tokens} of "
                                 f"{self.cache_tokens} are free; try a shorter max length or another server")
        rt = self._runtime(start, end)
        sid = uuid.uuid4().hex
        rt.open_session(sid, max_length, batch)
        self._reserved[sid] = wanted
        log.info("session opened %s blocks %d:%d max_length %d (%d active)",
                 sid[:8], start, end, max_length, self.active_sessions)
        self._notify()
        return sid, rt

    def _close(self, sid: str, rt: SpanRuntime) -> None:
        try:
            rt.close_session(sid)
        except UnknownSessionError:
            pass
        self._reserved.pop(sid, None)
        log.info("session closed %s (%d active)", sid[:8], self.active_sessions)
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


def _range(header: dict[str, Any], blocks: BlockRange) -> tuple[int, int]:
    start, end = header.get("start", blocks.start), header.get("end", blocks.end)
    if not (isinstance(start, int) and isinstance(end, int)):
        raise ProtocolError("'start' and 'end' must be integers")
    if not (blocks.start <= start < end <= blocks.end):
        raise BlockRangeError(f"blocks {start}:{end} are not inside this server's span {blocks}")
    return start, end


async def _close(stream: INetStream) -> None:
    with trio.move_on_after(1.0):
        try:
            await stream.close()
        except Exception as exc:  # noqa: BLE001 - closing a dead stream fails in several ways
            log.debug("closing a stream: %s", exc)
