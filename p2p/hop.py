"""One hop of an inference session: blocks [start, end) on one server, over one inference stream,
and how its failures are told apart (dead, hung, a bad reply, full, refusing the client)."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import trio

from corolla.core.dtypes import DTYPES
from corolla.p2p.client import SwarmClient, open_stream
from corolla.p2p.errors import PeerUnavailableError, ProtocolError, RemoteError
from corolla.p2p.records import INFERENCE_PROTOCOL
from corolla.p2p.routing import RouteHop
from corolla.p2p.wire import StreamGone, encode, read_message, write_message

if TYPE_CHECKING:
    from corolla.p2p.spotcheck import PendingCheck

log = logging.getLogger(__name__)

STEP_TIMEOUT = 5.0  # s for a server to answer one decoding step (a hung peer says nothing by itself)
TIMEOUT_PER_TOKEN = 0.02  # s added per token sent at once (prefill, replay)
CONNECT_TIMEOUT = 5.0
IDLE_EXPIRY_S = 60.0  # s unused after which a hop's stream ending is not held against its server
# Errors that another server would answer the same way: rerouting cannot help.
CLIENT_FAULTS = {"ShapeError", "DtypeError", "SessionTooLongError", "ProtocolError", "MessageTooLargeError"}
# A server that dropped an idle session did nothing wrong: reopen (replay) without a ban.
EXPIRED_CODES = {"SessionExpiredError"}
# A server that is full is alive and honest: route elsewhere or wait, and say so.
# (A server that no longer has the adapter it advertised is the same: route elsewhere.)
FULL_CODES = {"CacheFullError", "TooManySessionsError", "PeerLimitError", "ServerLeavingError", "UnknownAdapterError"}


@dataclass
class HopFailure(Exception):
    """A hop's server failed in a way another server may not (dead, hung, error reply, bad output)."""

    peer_id: str
    reason: str
    fatal: bool = False
    full: bool = False  # the server refused because it is full: not its fault
    cause: Exception | None = field(default=None, repr=False)
    after_idle: bool = False  # the stream ended while unused for long: maybe just an expired session


def step_timeout(base: float, tokens: int) -> float:
    return base + TIMEOUT_PER_TOKEN * tokens


class HopSession:
    """Blocks [start, end) of one session on one server, over one inference stream."""

    def __init__(self, hop: RouteHop, stream, session_id: str, timeout: float, push_key: str = "") -> None:
        self.hop, self.stream, self.session_id, self.timeout = hop, stream, session_id, timeout
        self.push_key = push_key  # shown by the server before this one when it pushes a step here
        self.dtype = DTYPES.get(hop.server.dtype, torch.float32)
        self.last_compute_ms = 0.0  # what the server says its last step took
        self.leaving = False  # the server said it is leaving the swarm
        self.last_used = time.monotonic()
        self.steps = 0  # steps answered (a spot-check always looks at the first)
        self.last_step_ms = 0.0  # round trip of the last step, as this client saw it
        self.checked = 0  # outputs before this position were checked (or decided nothing)
        self.check_wanted = False  # a step was picked for a check while one was under way
        self.checking: PendingCheck | None = None
        # A checker's own session over the same blocks, holding positions [0, shadow_end): each
        # check sends it only what it has not seen, instead of the whole input again.
        self.shadow: HopSession | None = None
        self.shadow_end = 0
        self.shadow_opening: trio.Event | None = None  # set when the opening of `shadow` under way ends


    @classmethod
    async def open(cls, client: SwarmClient, hop: RouteHop, max_length: int, timeout: float,
                   adapter: str | None = None) -> HopSession:
        """Open a session on the hop's server; its steps use the LoRA `adapter` (None: the base model)."""
        key = secrets.token_hex(16)
        request = {"type": "open", "max_length": max_length, "batch_size": 1, "start": hop.start, "end": hop.end,
                   "push_key": key}
        if adapter is not None:
            request["adapter"] = adapter
        try:
            stream = await open_stream(client.peer, hop.peer_id, INFERENCE_PROTOCOL, CONNECT_TIMEOUT)
            await write_message(stream, encode(request), timeout=timeout)
            header, _ = await read_message(stream, idle_timeout=timeout, body_timeout=timeout)
        except (PeerUnavailableError, StreamGone, trio.TooSlowError, ProtocolError) as exc:
            raise HopFailure(hop.peer_id, f"open: {_why(exc)}", cause=exc) from None
        if header.get("type") != "opened" or not isinstance(header.get("session"), str):
            await _abandon(stream)
            code = str(header.get("code"))[:64]
            raise HopFailure(hop.peer_id, f"open refused: {code}: {str(header.get('message'))[:300]}",
                             full=code in FULL_CODES)
        return cls(hop, stream, header["session"], timeout, key)

    async def exchange(self, hidden: torch.Tensor, start: int | None = None, seq: int | None = None,
                       prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Send hidden states [batch, tokens, hidden]; get the span's output in the same dtype.
        `start`: the position they take on the server, which drops its cache entries from there.
        `prompts`: the hop's deep prompts [blocks, P, hidden], sent while positions < P are computed."""
        t0 = time.perf_counter()
        await self.send(hidden, start, seq, prompts=prompts)
        out, _ = await self.receive(hidden, seq)
        self.last_step_ms = 1000 * (time.perf_counter() - t0)
        return out

    async def send(self, hidden: torch.Tensor, start: int | None, seq: int | None,
                   push: list[dict] | None = None, prompts: torch.Tensor | None = None) -> None:
        """Send one step; `push`: the hops after this one, to which the server passes its output."""
        header = {"type": "step", "session": self.session_id}
        for name, value in (("start", start), ("seq", seq), ("push", push)):
            if value is not None:
                header[name] = value
        try:
            tensors = [hidden.to(self.dtype)] + ([] if prompts is None else [prompts.to(self.dtype)])
            await write_message(self.stream, encode(header, tensors),
                                timeout=step_timeout(self.timeout, hidden.shape[1]))
        except (StreamGone, trio.TooSlowError, ProtocolError) as exc:
            raise HopFailure(self.hop.peer_id, _why(exc), cause=exc, after_idle=self._idle(exc)) from None

    async def receive(self, hidden: torch.Tensor, seq: int | None) -> tuple[torch.Tensor, dict]:
        """The answer to step `seq` whose input was `hidden` (a late answer to an earlier pushed step
        is skipped); the output in `hidden`'s dtype and the reply's header."""
        timeout = step_timeout(self.timeout, hidden.shape[1])
        try:
            with trio.fail_after(2 * timeout):  # stale answers must not hold the step forever
                while True:
                    header, tensors = await read_message(self.stream, idle_timeout=timeout, body_timeout=timeout)
                    if header.get("seq") is None or header.get("seq") == seq:
                        break
        except (StreamGone, trio.TooSlowError, ProtocolError) as exc:
            raise HopFailure(self.hop.peer_id, _why(exc), cause=exc, after_idle=self._idle(exc)) from None
        self.last_used = time.monotonic()
        if header.get("type") == "error":
            code, message = str(header.get("code"))[:64], str(header.get("message"))[:300]
            raise HopFailure(self.hop.peer_id, f"{code}: {message}", fatal=code in CLIENT_FAULTS,
                             cause=RemoteError(code, message), after_idle=code in EXPIRED_CODES)
        if header.get("type") != "result" or len(tensors) != 1:
            raise HopFailure(self.hop.peer_id, f"unexpected reply {header.get('type')!r}")
        out = tensors[0]
        compute_ms = header.get("compute_ms")
        self.last_compute_ms = float(compute_ms) if isinstance(compute_ms, int | float) else 0.0
        self.leaving = bool(header.get("leaving"))
        if out.shape != hidden.shape:
            raise HopFailure(self.hop.peer_id, f"result has shape {list(out.shape)}, sent {list(hidden.shape)}")
        if not torch.isfinite(out).all():
            raise HopFailure(self.hop.peer_id, "result has NaN or inf values")
        return out.to(hidden.dtype), header

    def _idle(self, exc: BaseException) -> bool:
        return isinstance(exc, StreamGone) and time.monotonic() - self.last_used > IDLE_EXPIRY_S

    async def close(self, polite: bool = True) -> None:
        if self.shadow is not None:
            shadow, self.shadow = self.shadow, None
            await shadow.close()
        with trio.move_on_after(1.0 if polite else 0.2):
            try:
                if polite:
                    await write_message(self.stream, encode({"type": "close"}), timeout=1.0)
                await self.stream.close()
            except (StreamGone, trio.TooSlowError, Exception) as exc:  # noqa: BLE001 - it may be dead
                log.debug("closing hop %s: %s", self.hop, exc)


async def _abandon(stream) -> None:
    with trio.move_on_after(0.2):
        try:
            await stream.reset()
        except Exception as exc:  # noqa: BLE001 - the stream may already be gone
            log.debug("reset: %s", exc)


def _why(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return str(exc) or type(exc).__name__
