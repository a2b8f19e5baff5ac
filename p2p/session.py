"""An inference session across the swarm: one stream per hop, KV caches on the servers, and
failover that replays the stored inputs of the failed blocks to their replacements."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

import torch
import trio

from corolla.core.dtypes import DTYPES
from corolla.p2p.client import SwarmClient, open_stream
from corolla.p2p.errors import (
    AdapterNotOfferedError,
    NoRouteError,
    PeerUnavailableError,
    ProtocolError,
    RemoteError,
    ServersFullError,
    SwarmError,
)
from corolla.p2p.records import INFERENCE_PROTOCOL, ServerInfo
from corolla.p2p.routing import RouteHop, plan_route
from corolla.p2p.spotcheck import SpotCheck
from corolla.p2p.wire import StreamGone, encode, read_message, write_message

log = logging.getLogger(__name__)

STEP_TIMEOUT = 5.0  # s for a server to answer one decoding step (a hung peer says nothing by itself)
TIMEOUT_PER_TOKEN = 0.02  # s added per token sent at once (prefill, replay)
ROUTE_WAIT = 30.0  # s to wait for a server to cover missing blocks before giving up
CONNECT_TIMEOUT = 5.0
IDLE_EXPIRY_S = 60.0  # s unused after which a hop's stream ending is not held against its server
MOVE_RETRY_S = 2.0  # s between looks for a replacement of a leaving server when there was none
# Errors that another server would answer the same way: rerouting cannot help.
CLIENT_FAULTS = {"ShapeError", "DtypeError", "SessionTooLongError", "ProtocolError", "MessageTooLargeError"}
# A server that dropped an idle session did nothing wrong: reopen (replay) without a ban.
EXPIRED_CODES = {"SessionExpiredError"}
# A server that is full is alive and honest: route elsewhere or wait, and say so.
# (A server that no longer has the adapter it advertised is the same: route elsewhere.)
FULL_CODES = {"CacheFullError", "TooManySessionsError", "PeerLimitError", "ServerLeavingError", "UnknownAdapterError"}


@dataclass
class FailoverEvent:
    """Blocks [start, end) moved from `from_peer` to `to_peers` after `reason`; `tokens` replayed.
    `seconds`: rerouting and replay; `detection`: from sending the step to noticing the failure."""

    start: int
    end: int
    from_peer: str
    to_peers: list[str]
    tokens: int
    seconds: float
    reason: str
    detection: float = 0.0


@dataclass
class WaitingEvent:
    """No live server covers `missing` blocks; the session waits for one (`waited` s so far)."""

    missing: list[int]
    waited: float
    full: bool = False  # servers hold these blocks but are full (sessions or cache)


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

    def __init__(self, hop: RouteHop, stream, session_id: str, timeout: float) -> None:
        self.hop, self.stream, self.session_id, self.timeout = hop, stream, session_id, timeout
        self.dtype = DTYPES.get(hop.server.dtype, torch.float32)
        self.last_compute_ms = 0.0  # what the server says its last step took
        self.leaving = False  # the server said it is leaving the swarm
        self.last_used = time.monotonic()
        self.steps = 0  # steps answered (a spot-check always looks at the first)
        self.last_step_ms = 0.0  # round trip of the last step, as this client saw it

    @classmethod
    async def open(cls, client: SwarmClient, hop: RouteHop, max_length: int, timeout: float,
                   adapter: str | None = None) -> HopSession:
        request = {"type": "open", "max_length": max_length, "batch_size": 1, "start": hop.start, "end": hop.end}
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
        return cls(hop, stream, header["session"], timeout)

    async def exchange(self, hidden: torch.Tensor, start: int | None = None,
                       prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Send hidden states [batch, tokens, hidden]; get the span's output in the same dtype.
        `start`: the position they take on the server, which drops its cache entries from there.
        `prompts`: the hop's deep prompts [blocks, P, hidden], sent while positions < P are computed."""
        timeout = step_timeout(self.timeout, hidden.shape[1])
        header = {"type": "step", "session": self.session_id}
        if start is not None:
            header["start"] = start
        t0 = time.perf_counter()
        try:
            tensors = [hidden.to(self.dtype)] + ([] if prompts is None else [prompts.to(self.dtype)])
            await write_message(self.stream, encode(header, tensors), timeout=timeout)
            header, tensors = await read_message(self.stream, idle_timeout=timeout, body_timeout=timeout)
        except (StreamGone, trio.TooSlowError, ProtocolError) as exc:
            idle = isinstance(exc, StreamGone) and time.monotonic() - self.last_used > IDLE_EXPIRY_S
            raise HopFailure(self.hop.peer_id, _why(exc), cause=exc, after_idle=idle) from None
        self.last_used = time.monotonic()
        self.last_step_ms = 1000 * (time.perf_counter() - t0)
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
        return out.to(hidden.dtype)

    async def close(self, polite: bool = True) -> None:
        with trio.move_on_after(1.0 if polite else 0.2):
            try:
                if polite:
                    await write_message(self.stream, encode({"type": "close"}), timeout=1.0)
                await self.stream.close()
            except (StreamGone, trio.TooSlowError, Exception) as exc:  # noqa: BLE001 - it may be dead
                log.debug("closing hop %s: %s", self.hop, exc)


class InferenceSession:
    """Hidden states through every block of the model, in order, with server-side caches.

    The inputs sent to each hop are kept (`max_length` tokens at most) so that when a server fails,
    its blocks can be rerouted (other servers, any boundaries) and their caches rebuilt by replay.
    """

    def __init__(self, client: SwarmClient, max_length: int, *, timeout: float = STEP_TIMEOUT,
                 route_wait: float = ROUTE_WAIT,
                 on_event: Callable[[FailoverEvent | WaitingEvent], None] | None = None,
                 spot_check: SpotCheck | None = None, adapter: str | None = None,
                 deep_prompts: torch.Tensor | None = None) -> None:
        self.client, self.max_length, self.timeout = client, max_length, timeout
        self.adapter = adapter  # the LoRA adapter every hop applies: only servers offering it are used
        self.deep_prompts = deep_prompts  # [num_blocks, P, hidden], added by the servers at positions < P
        self.spot_check = spot_check
        if spot_check is not None:
            spot_check.reputation = client.reputation  # one record of each peer
        self.route_wait = route_wait
        self.on_event = on_event or (lambda event: None)
        self.hops: list[HopSession] = []
        self.history: dict[int, list[torch.Tensor]] = {}
        self.position = 0
        self._next_move_try = 0.0

    @property
    def route(self) -> list[RouteHop]:
        return [h.hop for h in self.hops]

    async def __aenter__(self) -> Self:
        self.hops, _ = await self._open_range(0, self.client.num_blocks, None, reason="")
        for h in self.hops:
            self.history[h.hop.start] = []
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        async with trio.open_nursery() as nursery:
            for h in self.hops:
                nursery.start_soon(h.close)
        self.hops = []

    async def forward(self, hidden: torch.Tensor, start: int | None = None) -> torch.Tensor:
        """Run `hidden` [1, tokens, hidden_size] through all blocks; return the last block's output.
        `start`: the position these tokens take; every server drops its cache from there (and the
        inputs kept for replay are cut there too). None: right after the previous step."""
        if start is not None:
            self._rewind(start)
        if self.position + hidden.shape[1] > self.max_length:
            raise SwarmError(f"session would reach {self.position + hidden.shape[1]} tokens, "
                             f"past its maximum length {self.max_length}")
        x, k = hidden, 0
        while k < len(self.hops):
            hop = self.hops[k]
            self.history[hop.hop.start].append(x)
            sent = time.perf_counter()
            try:
                out = await hop.exchange(x, start, self._prompts(hop.hop, self.position if start is None else start))
                if x.shape[1] == 1:
                    self.client.observe_step(hop.hop.peer_id, hop.last_step_ms, hop.hop.end - hop.hop.start,
                                             hop.hop.server.rtt_ms)
                await self._check(hop, out)
                x = out
                k += 1
            except HopFailure as failure:
                if failure.fatal:
                    raise SwarmError(f"server {failure.peer_id[-8:]} refused the step: {failure.reason}"
                                     ) from failure.cause
                # A stream that ended during a long pause is most likely a session the server let
                # expire: move on without banning a healthy server (a dead one fails its info check).
                replaced, x = await self._replace(k, failure.reason, x.shape[1], failed=not failure.after_idle,
                                                  detection=time.perf_counter() - sent)
                k += replaced
        self.position += hidden.shape[1]
        if any(h.leaving for h in self.hops) and time.monotonic() >= self._next_move_try:
            await self._move_off_leaving_servers()
        return x

    def _rewind(self, start: int) -> None:
        if not (isinstance(start, int) and 0 <= start <= self.position):
            raise SwarmError(f"cannot go back to position {start!r}: the session holds {self.position} tokens")
        if start < self.position:
            for first, stored in self.history.items():
                self.history[first] = [torch.cat(stored, dim=1)[:, :start]] if stored else []
        self.position = start

    async def _check(self, hop: HopSession, out: torch.Tensor) -> None:
        """Spot-check this step of `hop` (if the policy picks it); HopFailure when its server lied,
        so that the step is redone elsewhere."""
        first, hop.steps = hop.steps == 0, hop.steps + 1
        # a checker's stateless forward adds no deep prompts, so such sessions are not spot-checked
        if self.spot_check is None or self.deep_prompts is not None or not self.spot_check.wants(first):
            return
        inputs = torch.cat(self.history[hop.hop.start], dim=1)
        caught = await self.spot_check.verify(self.client, hop.hop.server, hop.hop.start, hop.hop.end, inputs, out,
                                              adapter=self.adapter)
        if caught is None:
            return
        if caught.peer_id == hop.hop.peer_id:
            raise HopFailure(hop.hop.peer_id, f"wrong activations (relative error {caught.error:.3g}, "
                                              f"{len(caught.agreeing)} other servers agree)")
        self.client.ban(caught.peer_id)  # a checker lied: this hop's answer stands

    async def reroute(self, block: int, reason: str = "rerouted on request") -> None:
        """Move the hop holding `block` to other servers (never its current one), replaying its
        history there; reported to `on_event` like a failover."""
        k = next(i for i, h in enumerate(self.hops) if h.hop.start <= block < h.hop.end)
        await self._replace(k, reason, 0, failed=False, avoid={self.hops[k].hop.peer_id})

    async def _move_off_leaving_servers(self) -> None:
        """Move the blocks of servers that said they are leaving, between steps, where another server
        can take them; the others stay where they are (the server keeps serving while it drains)."""
        servers = self._offering(await self.client.servers(fresh=True))
        k = 0
        while k < len(self.hops):
            hop = self.hops[k]
            if hop.leaving:
                try:
                    plan_route(servers, hop.hop.start, hop.hop.end, cache_tokens=self.max_length)
                except NoRouteError:
                    self._next_move_try = time.monotonic() + MOVE_RETRY_S
                    k += 1
                    continue
                k += (await self._replace(k, "server leaving", 0, failed=False))[0]
            else:
                k += 1

    async def _replace(self, k: int, reason: str, new_tokens: int, failed: bool,
                       detection: float = 0.0, avoid: set[str] | None = None) -> tuple[int, torch.Tensor]:
        """Replace hop k by a new route over its blocks, replaying its stored inputs (the current step
        included); return how many hops replaced it and the output for the last `new_tokens` tokens.
        A failed server is banned; a leaving one is only avoided while it says so."""
        t0 = time.perf_counter()
        old = self.hops[k]
        if failed:
            seconds = self.client.ban(old.hop.peer_id)
            log.warning("server %s failed (%s); banned for %.0f s, rerouting blocks %d:%d",
                        old.hop.peer_id[-8:], reason, seconds, old.hop.start, old.hop.end)
        await old.close(polite=not failed)
        stored = self.history.pop(old.hop.start)
        inputs = torch.cat(stored, dim=1)
        try:
            new_hops, out = await self._open_range(old.hop.start, old.hop.end, inputs, reason=reason,
                                                   avoid=avoid or set())
        except BaseException:
            # Keep what a later step needs to try again (its hop is closed, so it will reroute).
            self.history[old.hop.start] = stored
            raise
        self.hops[k:k + 1] = new_hops
        self.on_event(FailoverEvent(old.hop.start, old.hop.end, old.hop.peer_id,
                                    [h.hop.peer_id for h in new_hops], inputs.shape[1],
                                    time.perf_counter() - t0, reason, detection))
        return len(new_hops), out[:, inputs.shape[1] - new_tokens:]

    async def _open_range(self, start: int, end: int, inputs: torch.Tensor | None, reason: str,
                          avoid: set[str] | frozenset[str] = frozenset()
                          ) -> tuple[list[HopSession], torch.Tensor | None]:
        """Open sessions covering blocks [start, end) and, when `inputs` is given, replay it through
        them, storing each new hop's inputs. Retries other servers until `route_wait` runs out."""
        waited_since: float | None = None
        while True:
            servers = await self.client.servers(fresh=bool(reason), rediscover=waited_since is not None)
            servers = [s for s in self._offering(servers, first=not reason) if s.peer_id not in avoid]
            try:
                route = plan_route(servers, start, end, cache_tokens=self.max_length,
                                   model=self.client.model_name)
            except NoRouteError as exc:
                now = time.monotonic()
                waited_since = waited_since or now
                if now - waited_since >= self.route_wait:
                    raise
                self.on_event(WaitingEvent(exc.missing, now - waited_since, isinstance(exc, ServersFullError)))
                await trio.sleep(1.0)
                continue
            opened: list[HopSession] = []
            try:
                x = inputs
                for hop in route:
                    session = await HopSession.open(self.client, hop, self.max_length, self.timeout, self.adapter)
                    opened.append(session)
                    if x is not None:
                        self.history[hop.start] = [x]
                        x = await session.exchange(x, prompts=self._prompts(hop, 0))
                return opened, x
            except HopFailure as failure:
                for session in opened:
                    await session.close(polite=False)
                    if inputs is not None and session.hop.start != start:
                        self.history.pop(session.hop.start, None)  # inputs of a route not taken
                if failure.fatal:
                    raise SwarmError(f"server {failure.peer_id[-8:]} refused: {failure.reason}") from None
                if failure.full:
                    self.client.note_full(failure.peer_id)
                    continue
                self.client.ban(failure.peer_id)
                log.warning("server %s failed while opening (%s); trying another", failure.peer_id[-8:],
                            failure.reason)

    def _prompts(self, hop: RouteHop, position: int) -> torch.Tensor | None:
        """The hop's deep prompts when a step starting at `position` reaches into them, else None."""
        if self.deep_prompts is None or position >= self.deep_prompts.shape[1]:
            return None
        return self.deep_prompts[hop.start:hop.end]

    def _offering(self, servers: list[ServerInfo], first: bool = False) -> list[ServerInfo]:
        """The servers that serve this session's adapter (all of them without one). Opening a session
        with an adapter no live server offers fails at once with the names they do offer."""
        if self.adapter is None:
            return servers
        offering = [s for s in servers if self.adapter in s.adapters]
        if first and servers and not offering:
            offered = sorted({name for s in servers for name in s.adapters})
            raise AdapterNotOfferedError(f"no server of {self.client.model_name} offers the adapter {self.adapter!r} "
                                      f"(adapters offered: {', '.join(offered) or 'none'})")
        return offering


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
