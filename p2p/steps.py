"""Inference steps on a server, from the session's client or pushed by the server before it.

A client may send a step with the rest of its route: after computing, this server pushes its output
straight to the next server's session (on the push protocol) and only then answers the client, which
keeps that answer for failover replay. The next server answers on the client's own inference stream.
A decoding token then crosses k+1 links instead of 2k.

Who may push into a session: whoever shows the session's push key, which its client chose when it
opened the session and told only the servers before it on its route, and who names the session's
client. Anything else is refused to the pusher and the session never hears of it. An accepted push
is checked like a client's step (dtype, shape, tokens). A push older than the session's latest step
(`seq`) is refused, so that a late push cannot overwrite what a client-mediated retry computed.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import torch
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from corolla.core.errors import CorollaError, ShapeError, UnknownSessionError
from corolla.p2p.errors import ProtocolError
from corolla.p2p.fairness import PeerLimitError, SessionSlot
from corolla.p2p.names import short_id
from corolla.p2p.records import LEAVING, PUSH_PROTOCOL
from corolla.p2p.wire import StreamGone, close_stream, encode, error_frame, is_int, write_message

log = logging.getLogger("corolla.server")

PUSH_CONNECT_TIMEOUT = 3.0  # s to reach the next server; past it this session's steps are client-mediated
PUSH_WRITE_TIMEOUT = 5.0  # s for one pushed frame to leave
WRITE_TIMEOUT = 10.0
MAX_ROUTE = 32  # hops after this one a step may name
MAX_ADDRS = 8  # addresses per hop
MAX_TEXT = 256  # characters of a peer id, address, session id or key
KEY_MIN = 16  # characters of a push key


class PushRefusedError(CorollaError):
    """A push named a session this server holds without its key or its client."""


@dataclass
class SessionSteps:
    """One session's step state: the client's stream, who holds it, its push key, the latest step."""

    stream: INetStream
    slot: SessionSlot
    key: str
    lock: trio.Lock = field(default_factory=trio.Lock)
    seq: int = -1
    next_peer: str = ""  # where this session's outputs were last pushed
    next_stream: INetStream | None = None
    unreachable: set[str] = field(default_factory=set)  # next servers this one could not dial
    pushed_in: int = 0  # steps that arrived pushed


def push_key_of(header: dict[str, Any]) -> str:
    """The push key a client chose at 'open' ('' when it wants no pushes)."""
    key = header.get("push_key", "")
    if not isinstance(key, str) or (key and not KEY_MIN <= len(key) <= MAX_TEXT):
        raise ProtocolError(f"'push_key' must be a string of {KEY_MIN} to {MAX_TEXT} characters")
    return key


def check_route(route: Any) -> list[dict[str, Any]]:
    """The hops after this one, as a step names them; ProtocolError unless well formed."""
    if not isinstance(route, list) or len(route) > MAX_ROUTE:
        raise ProtocolError(f"'push' must be a list of at most {MAX_ROUTE} hops")
    for hop in route:
        if not isinstance(hop, dict):
            raise ProtocolError("each hop of 'push' must be a map")
        for name in ("peer", "session", "key"):
            if not isinstance(hop.get(name), str) or not 0 < len(hop[name]) <= MAX_TEXT:
                raise ProtocolError(f"each hop of 'push' needs a string {name!r}")
        addrs = hop.get("addrs", [])
        if (not isinstance(addrs, list) or len(addrs) > MAX_ADDRS
                or not all(isinstance(a, str) and len(a) <= MAX_TEXT for a in addrs)):
            raise ProtocolError(f"'addrs' must be a list of at most {MAX_ADDRS} multiaddr strings")
    return route


class StepService:
    """Runs every inference step of a ServerNode: the client's, and those pushed to it."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.host: Any = None
        self.sessions: dict[str, SessionSteps] = {}
        self._pushers: dict[str, int] = {}  # per peer: push streams open to this server
        self.pushed_in = 0  # steps that arrived pushed (statistics, tests)

    def register(self, sid: str, stream: INetStream, slot: SessionSlot, key: str) -> None:
        self.sessions[sid] = SessionSteps(stream, slot, key)

    async def forget(self, sid: str) -> None:
        entry = self.sessions.pop(sid, None)
        if entry is not None and entry.next_stream is not None:
            await close_stream(entry.next_stream)

    # -- a step, however it came ---------------------------------------------------------------
    async def client_step(self, sid: str, header: dict[str, Any], x: torch.Tensor,
                          prompts: torch.Tensor | None = None) -> None:
        """A step the client sent on its own stream (`prompts`: deep prompts for positions below their
        length); errors propagate to the session loop."""
        entry = self.sessions[sid]
        seq = _seq(header)
        async with entry.lock:
            if seq is not None:
                entry.seq = max(entry.seq, seq)
            await self._step(sid, entry, header, x, seq, prompts)

    async def _step(self, sid: str, entry: SessionSteps, header: dict[str, Any], x: torch.Tensor,
                    seq: int | None, prompts: torch.Tensor | None = None) -> None:
        node = self.node
        route = check_route(header["push"]) if "push" in header else []
        node.span.check_hidden(x)
        if x.shape[0] * x.shape[1] > node.max_request_tokens:
            raise ShapeError(f"a step may carry at most {node.max_request_tokens} tokens (x batch)")
        start = header.get("start")
        entry.slot.last_used = time.monotonic()  # busy, not idle: its cache is not up for reclaiming
        rt = entry.slot.runtime
        # "start": where these tokens go, dropping cache entries after it (speculative decoding, retries)
        out, seconds, _ = await node.batcher.forward(rt, sid, x, start, prompts)
        node.observe(x.shape[1], seconds, len(rt.span.blocks))
        node.tokens_served += x.shape[0] * x.shape[1]
        reply: dict[str, Any] = {"type": "result", "compute_ms": 1000 * seconds}
        if seq is not None:
            reply["seq"] = seq
        if route:
            # the next server first: this is the critical path; the client's copy is for replay
            reply["pushed"] = await self._push(entry, route, out, start, seq)
        if node.state == LEAVING:
            reply["leaving"] = True  # the client moves this session elsewhere at its leisure
        await write_message(entry.stream, encode(reply, [out]), timeout=WRITE_TIMEOUT)
        entry.slot.last_used = time.monotonic()

    async def _push(self, entry: SessionSteps, route: list[dict[str, Any]], out: torch.Tensor,
                    start: Any, seq: int | None) -> bool:
        """Send `out` to the next hop's session; False when it cannot be reached (the client then
        carries this step on itself)."""
        nxt = route[0]
        if seq is None or nxt["peer"] in entry.unreachable:
            return False
        if entry.next_stream is None or entry.next_peer != nxt["peer"]:
            if entry.next_stream is not None:
                await close_stream(entry.next_stream)
            entry.next_stream = await self._dial(nxt)
            entry.next_peer = nxt["peer"]
            if entry.next_stream is None:
                entry.unreachable.add(nxt["peer"])
                return False
        frame = {"type": "push", "session": nxt["session"], "key": nxt["key"], "client": entry.slot.peer,
                 "seq": seq, "push": route[1:]}
        if start is not None:
            frame["start"] = start
        try:
            await write_message(entry.next_stream, encode(frame, [out]), timeout=PUSH_WRITE_TIMEOUT)
            return True
        except (StreamGone, trio.TooSlowError) as exc:
            log.info("push to %s failed: %s", short_id(nxt["peer"]), exc or type(exc).__name__)
            await close_stream(entry.next_stream)
            entry.next_stream, entry.next_peer = None, ""
            return False

    async def _dial(self, hop: dict[str, Any]) -> INetStream | None:
        try:
            pid = ID.from_base58(hop["peer"])
            addrs = [multiaddr.Multiaddr(a) for a in hop.get("addrs", []) if "/p2p-circuit" not in a]
            if addrs:
                self.host.get_peerstore().add_addrs(pid, addrs, 600)
            with trio.fail_after(PUSH_CONNECT_TIMEOUT):
                return await self.host.new_stream(pid, [PUSH_PROTOCOL])
        except Exception as exc:  # noqa: BLE001 - bad ids, addresses, dials and negotiation fail many ways
            log.info("cannot push to %s: %s: %s", short_id(str(hop["peer"])), type(exc).__name__, exc)
            return None

    # -- the push protocol ---------------------------------------------------------------------
    async def serve_pushes(self, stream: INetStream, pusher: str) -> None:
        """Pushed steps from one server, for as long as it keeps the stream; a refused push is
        answered to the pusher, an accepted one's error to the session's client."""
        node = self.node
        if self._pushers.get(pusher, 0) >= node.max_sessions:
            raise PeerLimitError(f"a peer may hold at most {node.max_sessions} push streams here")
        self._pushers[pusher] = self._pushers.get(pusher, 0) + 1
        try:
            while True:
                header, tensors = await node.read(stream, node.session_idle_timeout)
                try:
                    sid, entry, seq = self._authorize(header, tensors)
                except CorollaError as exc:
                    await write_message(stream, error_frame(type(exc).__name__, str(exc)[:1000]),
                                        timeout=WRITE_TIMEOUT)
                    continue
                await self._pushed_step(sid, entry, header, tensors[0], seq, pusher)
        finally:
            self._pushers[pusher] -= 1
            if not self._pushers[pusher]:
                del self._pushers[pusher]

    def _authorize(self, header: dict[str, Any], tensors: list[torch.Tensor]
                   ) -> tuple[str, SessionSteps, int]:
        if header.get("type") != "push" or len(tensors) != 1:
            raise ProtocolError(f"expected a 'push' message with one tensor, got {header.get('type')!r}")
        sid, key, client, seq = header.get("session"), header.get("key"), header.get("client"), _seq(header)
        if not isinstance(sid, str) or sid not in self.sessions:
            raise UnknownSessionError(f"no session {str(sid)[:40]!r} is open here")
        entry = self.sessions[sid]
        if not (entry.key and isinstance(key, str) and hmac.compare_digest(key.encode(), entry.key.encode())
                and client == entry.slot.peer):
            raise PushRefusedError("this push does not carry the session's key and client")
        if seq is None:
            raise ProtocolError("a push needs an integer 'seq'")
        return sid, entry, seq

    async def _pushed_step(self, sid: str, entry: SessionSteps, header: dict[str, Any], x: torch.Tensor,
                           seq: int, pusher: str) -> None:
        async with entry.lock:
            if seq <= entry.seq:
                return  # the client has moved on (or retried this step itself): a late push is void
            if not entry.pushed_in:
                log.info("session %s: steps arrive pushed by %s", sid[:8], short_id(pusher))
            entry.seq = seq
            entry.pushed_in += 1
            self.pushed_in += 1
            try:
                await self._step(sid, entry, header, x, seq)
            except CorollaError as exc:  # the client hears of it on its stream, in this step's place
                frame = encode({"type": "error", "code": type(exc).__name__, "message": str(exc)[:1000],
                                "seq": seq})
                try:
                    await write_message(entry.stream, frame, timeout=WRITE_TIMEOUT)
                except (StreamGone, trio.TooSlowError):
                    pass
            except (StreamGone, trio.TooSlowError):
                pass  # the client's stream is gone: its session loop closes the session


def _seq(header: dict[str, Any]) -> int | None:
    seq = header.get("seq")
    if seq is None:
        return None
    if not is_int(seq) or seq < 0:
        raise ProtocolError("'seq' must be a non-negative integer")
    return seq
