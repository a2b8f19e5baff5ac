"""Catching servers that return wrong activations: every so many outputs of a hop (SpotCheck.interval),
a second server holding the same blocks computes the hop's inputs too, and every output since the
hop's last check is compared within a tolerance fitting the dtypes and quantizations. The second
server keeps its own session over those blocks (a checker session, p2p/session.py), so each check
sends only the inputs it has not seen; when it disagrees, other servers recompute the whole input
(the forward protocol) and a third decides. The peer in the minority is banned, recorded in the
reputation, and reported. Checks run beside the decoding; a liar caught late makes the session roll
back to its first wrong output, so that nothing it decided survives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import trio

from corolla.core.dtypes import tolerance
from corolla.p2p.client import SwarmClient, request_forward
from corolla.p2p.errors import PeerUnavailableError, ProtocolError, RemoteError
from corolla.p2p.names import blocks_text, short_id
from corolla.p2p.records import ServerInfo
from corolla.p2p.reputation import Reputation

log = logging.getLogger(__name__)

DEFAULT_RATE = 0.05  # fraction of later steps after which a check starts; a hop's first step is always checked
# A hop is checked at the latest when this many of its outputs are unchecked (text waits for its
# check: it then trails the decoding by about this many tokens, plus a check's round trip).
HELD_TOKENS = 16
CHECK_TIMEOUT = 10.0
# A check's verdict when nobody was caught: all agree; they disagree and none can decide; no other
# server holds the blocks, so nobody can tell (such outputs are shown unchecked, as nothing can change).
PASSED, UNSURE, NOBODY = "passed", "unsure", "nobody"


@dataclass
class LiarCaught:
    """`peer_id` answered blocks [start, end) differently from `agreeing` (relative error `error`);
    `first`: the first wrong output among those compared (0: the first compared)."""

    peer_id: str
    start: int
    end: int
    error: float
    agreeing: list[str]
    first: int = 0


@dataclass(eq=False)
class PendingCheck:
    """A check under way of one hop's outputs at positions [since, end); `valid_end` shrinks when the
    session goes back before `end` (what was compared past it is gone)."""

    hop: object  # the p2p.session.HopSession checked
    since: int
    end: int
    valid_end: int
    verdict: LiarCaught | str | None = None  # None until done
    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass
class SpotCheck:
    """When and how to check. rate 0: off; 1: every step; in between, a hop's outputs are compared
    every 1/rate of its steps, and at the latest every `held` (every output is compared in the end:
    the rate says how soon, and how many of the decided tokens wait for their check)."""

    rate: float = DEFAULT_RATE
    held: int | None = None  # outputs left unchecked at most before a check starts anyway (None: HELD_TOKENS)
    reputation: Reputation = field(default_factory=Reputation)  # use the client's (see InferenceSession)
    on_caught: Callable[[LiarCaught], None] = lambda caught: None
    checks: int = 0
    skipped: int = 0  # steps chosen for a check with no second server to ask

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"spot-check rate must be from 0 to 1, got {self.rate}")
        self.held = HELD_TOKENS if self.held is None else self.held
        if self.held < 1:
            raise ValueError(f"spot-check held outputs must be at least 1, got {self.held}")

    @property
    def interval(self) -> int:
        """Outputs of a hop left unchecked before a check starts: 1/rate, at most `held`."""
        return min(self.held, max(1, round(1 / self.rate))) if self.rate > 0 else 0

    def wants(self, first_step: bool, unchecked: int) -> bool:
        """Whether a hop that just answered (`first_step`: for the first time) and has `unchecked`
        outputs that no check covers yet (done or under way) is due for a check."""
        if self.rate <= 0:
            return False
        return first_step or unchecked >= self.interval

    async def checkers(self, client: SwarmClient, server: ServerInfo, start: int, end: int,
                       adapter: str | None = None) -> list[ServerInfo]:
        """Servers other than `server` holding all of blocks [start, end) (and offering the LoRA
        `adapter`, if any), fastest first."""
        others = [s for s in await client.servers() if s.peer_id != server.peer_id
                  and s.start <= start and end <= s.end and (adapter is None or adapter in s.adapters)]
        return sorted(others, key=lambda s: (s.rtt_ms + s.block_ms * (end - start), s.peer_id))

    def passed(self, peer_id: str) -> str:
        """`peer_id` passed a check by a checker's own session (InferenceSession._shadow_check)."""
        self.checks += 1
        self.reputation.passed(peer_id)
        return PASSED

    async def verify(self, client: SwarmClient, server: ServerInfo, start: int, end: int,
                     inputs: torch.Tensor, output: torch.Tensor, adapter: str | None = None) -> LiarCaught | str:
        """Compare `output` (the last tokens of blocks [start, end) run by `server` on `inputs`, with the
        LoRA `adapter` if any) with other servers; who lied (`server` or a checker), PASSED, UNSURE (none
        can tell) or NOBODY."""
        others = await self.checkers(client, server, start, end, adapter)
        tokens = output.shape[1]
        answers: list[tuple[str, torch.Tensor]] = []

        async def ask(other: ServerInfo, got: dict[str, torch.Tensor]) -> None:
            try:
                full = await request_forward(client.peer, other.peer_id, start, end, inputs, CHECK_TIMEOUT,
                                             adapter=adapter)
            except (PeerUnavailableError, RemoteError, ProtocolError) as exc:
                log.debug("spot-check: %s did not answer: %s", other.name, exc)
                return
            got[other.peer_id] = full[:, -tokens:]

        # Two servers at once (a check comes here when the checker's own session could not tell, so
        # a third one is most often needed), fastest first; more when some do not answer.
        pending = list(others)
        while pending and len(answers) < 2:
            asked, pending = pending[:2 - len(answers)], pending[2 - len(answers):]
            got: dict[str, torch.Tensor] = {}
            async with trio.open_nursery() as nursery:
                for other in asked:
                    nursery.start_soon(ask, other, got)
            answers += [(other.peer_id, got[other.peer_id]) for other in asked if other.peer_id in got]
            first = next((o for o in others if answers and o.peer_id == answers[0][0]), None)
            if first is not None and agree(output, answers[0][1], server.precision, first.precision):
                self.checks += 1
                self.reputation.passed(server.peer_id)
                return PASSED
        if not answers:
            self.skipped += 1
            return NOBODY if not others else UNSURE
        self.checks += 1
        if len(answers) == 1:
            log.warning("spot-check: %s and %s disagree on %s and no third server can decide",
                        server.name, short_id(answers[0][0]), blocks_text(start, end))
            return UNSURE
        (first_id, first), (second_id, second) = answers
        precision = {o.peer_id: o.precision for o in others}  # each judged by its own and the other's
        if agree(first, second, precision[first_id], precision[second_id]):
            caught = LiarCaught(server.peer_id, start, end, relative_error(output, first), [first_id, second_id],
                                first_wrong(output, first, server.precision))
        elif agree(output, second, server.precision, precision[second_id]):
            caught = LiarCaught(first_id, start, end, relative_error(first, second), [server.peer_id, second_id])
        else:
            log.warning("spot-check: three servers disagree on %s; trusting none of them", blocks_text(start, end))
            return UNSURE
        self.reputation.failed(caught.peer_id)
        for pid in caught.agreeing:
            self.reputation.passed(pid)
        log.warning("server %s returned wrong activations for %s (relative error %.3g; %s agree)",
                    short_id(caught.peer_id), blocks_text(start, end), caught.error,
                    ", ".join(short_id(p) for p in caught.agreeing))
        self.on_caught(caught)
        return caught


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest value (hidden states reach the hundreds)."""
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-6)
    return (a.float() - b.float()).abs().max().item() / scale


def first_wrong(output: torch.Tensor, truth: torch.Tensor, precision: str | tuple[str, str]) -> int:
    """Index of the first token [batch, tokens, hidden] whose output is off by more than the tolerance
    (relative to the largest value of all); 0 when no single token is."""
    tol = tolerance(precision)
    scale = max(output.abs().max().item(), truth.abs().max().item(), 1e-6)
    off = ((output.float() - truth.float()).abs().amax(dim=(0, 2)) / scale > tol).nonzero()
    return int(off[0, 0]) if off.numel() else 0


def agree(a: torch.Tensor, b: torch.Tensor, precision_a: str | tuple[str, str],
          precision_b: str | tuple[str, str]) -> bool:
    """Whether two servers' outputs match within what their precisions (a dtype name, or dtype and
    quantization: ServerInfo.precision) allow."""
    tol = max(tolerance(precision_a), tolerance(precision_b))
    return a.shape == b.shape and bool(torch.isfinite(b).all()) and relative_error(a, b) <= tol
