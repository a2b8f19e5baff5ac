"""An inference session across the swarm: one stream per hop, KV caches on the servers, and
failover that replays the stored inputs of the failed blocks to their replacements."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

import torch
import trio

from corolla.p2p.client import SwarmClient
from corolla.p2p.errors import (
    AdapterNotOfferedError,
    NoRouteError,
    ServersFullError,
    SwarmError,
)
from corolla.p2p.hop import FULL_CODES, STEP_TIMEOUT, HopFailure, HopSession
from corolla.p2p.names import blocks_text, short_id
from corolla.p2p.push_route import pushed_forward
from corolla.p2p.records import ServerInfo
from corolla.p2p.routing import RouteHop, plan_route
from corolla.p2p.session_checks import SpotChecking
from corolla.p2p.spotcheck import PendingCheck, SpotCheck

__all__ = ["FULL_CODES", "FailoverEvent", "HopFailure", "HopSession", "InferenceSession", "WaitingEvent"]

log = logging.getLogger(__name__)

ROUTE_WAIT = 30.0  # s to wait for a server to cover missing blocks before giving up
MOVE_RETRY_S = 2.0  # s between looks for a replacement of a leaving server when there was none


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
    nicknames: dict[str, str] = field(default_factory=dict)  # peer id -> the server's chosen nickname


@dataclass
class WaitingEvent:
    """No live server covers `missing` blocks; the session waits for one (`waited` s so far)."""

    missing: list[int]
    waited: float
    full: bool = False  # servers hold these blocks but are full (sessions or cache)


class InferenceSession(SpotChecking):
    """Hidden states through every block of the model, in order, with server-side caches.

    The inputs sent to each hop are kept (`max_length` tokens at most) so that when a server fails,
    its blocks can be rerouted (other servers, any boundaries) and their caches rebuilt by replay.
    With spot checks, each hop's outputs are kept too, and checks run beside the steps in the
    session's nursery; `checked()` reports how far outputs are checked, or Rollback for a liar.
    """

    def __init__(self, client: SwarmClient, max_length: int, *, timeout: float = STEP_TIMEOUT,
                 route_wait: float = ROUTE_WAIT,
                 on_event: Callable[[FailoverEvent | WaitingEvent], None] | None = None,
                 spot_check: SpotCheck | None = None, push: bool = True, adapter: str | None = None,
                 deep_prompts: torch.Tensor | None = None, prompt_tokens: int = 1) -> None:
        self.client, self.max_length, self.timeout = client, max_length, timeout
        self.prompt_tokens = prompt_tokens  # the first step's length, when known: routes it off slow links
        self.push = push  # servers pass each step along the route themselves (p2p/push_route.py)
        self.pushed_steps = 0  # steps that went from server to server all the way
        self._seq = 0  # step number: tells a step's answers from those of an abandoned attempt
        self.adapter = adapter  # the LoRA adapter every hop applies: only servers offering it are used
        self.deep_prompts = deep_prompts  # [num_blocks, P, hidden], added by the servers at positions < P
        self.spot_check = spot_check
        if spot_check is not None:
            spot_check.reputation = client.reputation  # one record of each peer
        self.route_wait = route_wait
        self.on_event = on_event or (lambda event: None)
        self.hops: list[HopSession] = []
        self.history: dict[int, list[torch.Tensor]] = {}
        self.outputs: dict[int, list[torch.Tensor]] = {}  # each hop's outputs, kept for spot checks
        self.position = 0
        self._next_move_try = 0.0
        self._checks: list[PendingCheck] = []
        self._openers = trio.CancelScope()  # checkers' sessions opened beside the first steps
        self._stack = contextlib.AsyncExitStack()
        self._nursery: trio.Nursery | None = None

    @property
    def route(self) -> list[RouteHop]:
        return [h.hop for h in self.hops]

    async def __aenter__(self) -> Self:
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())  # the checks' home
        try:
            self.hops, _ = await self._open_range(0, self.client.num_blocks, None, reason="")
        except BaseException:
            await self._stack.__aexit__(None, None, None)
            raise
        for h in self.hops:
            self.history[h.hop.start], self.outputs[h.hop.start] = [], []
        self._open_checkers()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.close()  # cancels the checks under way
        finally:
            # The nursery only waits for the cancelled checks; the body's own exception passes as it
            # is (given to the nursery, it would come out wrapped in an exception group).
            await self._stack.__aexit__(None, None, None)

    async def close(self) -> None:
        self._cancel_checks()
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
        self._seq += 1
        x, k = hidden, 0
        # deep prompts reach the servers only on client-mediated steps (pushed steps carry no prompts)
        prompted = self.deep_prompts is not None and (self.position if start is None else start) < \
            self.deep_prompts.shape[1]
        if self.push and len(self.hops) > 1 and not prompted:
            start = self.position if start is None else start  # a step carried twice then lands once
            x, k = await pushed_forward(self, hidden, start, self._seq)
        while k < len(self.hops):
            hop = self.hops[k]
            self.history[hop.hop.start].append(x)
            sent = time.perf_counter()
            try:
                out = await hop.exchange(x, start, self._seq,
                                         self._prompts(hop.hop, self.position if start is None else start))
                if x.shape[1] == 1:
                    self.client.observe_step(hop.hop.peer_id, hop.last_step_ms, hop.hop.end - hop.hop.start,
                                             hop.hop.server.rtt_ms)
                self.answered(hop, out)
                x = out
                k += 1
            except HopFailure as failure:
                replaced, x = await self.recover(k, failure, x.shape[1], sent)
                k += replaced
        self.position += hidden.shape[1]
        for h in self.hops:
            if h.check_wanted and h.checking is None:
                self._start_check(h)
        if any(h.leaving for h in self.hops) and time.monotonic() >= self._next_move_try:
            await self._move_off_leaving_servers()
        return x

    async def recover(self, k: int, failure: HopFailure, tokens: int, sent: float) -> tuple[int, torch.Tensor]:
        """Move hop k's blocks elsewhere after `failure` of a step of `tokens` tokens sent at `sent`
        (perf_counter s); return how many hops replaced it and the output of its last one."""
        if failure.fatal:
            raise SwarmError(f"server {short_id(failure.peer_id)} refused the step: {failure.reason}") from failure.cause
        # The rest of this session is client-mediated, under a new step number: answers and pushes
        # of the failed attempt still under way are then told apart and ignored.
        self.push = False
        self.fresh_step()
        # A stream that ended during a long pause is most likely a session the server let
        # expire: move on without banning a healthy server (a dead one fails its info check).
        return await self._replace(k, failure.reason, tokens, failed=not failure.after_idle,
                                   detection=time.perf_counter() - sent)

    def fresh_step(self) -> int:
        """Number the rest of this step anew (a late answer or push of the old number is ignored)."""
        self._seq += 1
        return self._seq

    def _rewind(self, start: int) -> None:
        if not (isinstance(start, int) and 0 <= start <= self.position):
            raise SwarmError(f"cannot go back to position {start!r}: the session holds {self.position} tokens")
        if start < self.position:
            for kept in (self.history, self.outputs):
                for first, stored in kept.items():
                    kept[first] = [torch.cat(stored, dim=1)[:, :start]] if stored else []
            for h in self.hops:
                h.checked, h.shadow_end = min(h.checked, start), min(h.shadow_end, start)
            for check in self._checks:
                check.valid_end = min(check.valid_end, start)
        self.position = start

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
            log.warning("server %s failed (%s); banned for %.0f s, rerouting %s",
                        old.hop.server.name, reason, seconds, blocks_text(old.hop.start, old.hop.end))
        await old.close(polite=not failed)
        stored = self.history.pop(old.hop.start)
        self.outputs.pop(old.hop.start, None)
        inputs = torch.cat(stored, dim=1)
        try:
            new_hops, out = await self._open_range(old.hop.start, old.hop.end, inputs, reason=reason,
                                                   avoid=avoid or set())
        except BaseException:
            # Keep what a later step needs to try again (its hop is closed, so it will reroute).
            self.history[old.hop.start] = stored
            self.outputs[old.hop.start] = []
            raise
        for h in new_hops:  # what they replayed decided nothing but the last `new_tokens` outputs
            h.checked = inputs.shape[1] - new_tokens
        self.hops[k:k + 1] = new_hops
        names = {h.hop.peer_id: h.hop.server.nickname for h in [old, *new_hops] if h.hop.server.nickname}
        self.on_event(FailoverEvent(old.hop.start, old.hop.end, old.hop.peer_id,
                                    [h.hop.peer_id for h in new_hops], inputs.shape[1],
                                    time.perf_counter() - t0, reason, detection, names))
        return len(new_hops), (inputs[:, :0] if out is None else out[:, inputs.shape[1] - new_tokens:])

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
                # what the new route carries: the replay or the prompt, then one token at a time
                tokens = max(inputs.shape[1] if inputs is not None else self.prompt_tokens, 1)
                route = plan_route(servers, start, end, cache_tokens=self.max_length, model=self.client.model_name,
                                   push=self.push, tokens=tokens, steps=max(self.max_length - tokens, 0))
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
                x = inputs if inputs is not None and inputs.shape[1] else None  # nothing to replay at 0
                for hop in route:
                    session = await HopSession.open(self.client, hop, self.max_length, self.timeout, self.adapter)
                    opened.append(session)
                    self.history[hop.start], self.outputs[hop.start] = ([x], []) if x is not None else ([], [])
                    if x is not None:
                        x = await session.exchange(x, prompts=self._prompts(hop, 0))
                        self.outputs[hop.start] = [x]
                return opened, x
            except HopFailure as failure:
                for session in opened:
                    await session.close(polite=False)
                    if session.hop.start != start:
                        self.history.pop(session.hop.start, None)  # inputs of a route not taken
                        self.outputs.pop(session.hop.start, None)
                if failure.fatal:
                    raise SwarmError(f"server {short_id(failure.peer_id)} refused: {failure.reason}") from None
                if failure.full:
                    self.client.note_full(failure.peer_id)
                    continue
                self.client.ban(failure.peer_id)
                log.warning("server %s failed while opening (%s); trying another", short_id(failure.peer_id),
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
