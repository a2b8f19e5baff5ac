"""Spot checks of an inference session's hops, run beside its steps (p2p/session.py).

Each hop's outputs are kept; a step the policy picks starts a check in the session's nursery: the
hop's checker session (another server holding the same blocks, fed only the inputs it has not seen)
recomputes every output since the hop's last check; when it disagrees, two other servers recompute
it all and the majority decides. `checked()` reports how far every hop's outputs are checked, or
raises Rollback after replacing a liar, back to its first wrong output.

A hop is checked whenever `SpotCheck.interval` of its outputs are unchecked (1/rate, at most
`held`): the text shown (which waits for its check) then trails the decoding by a bounded number of
tokens instead of coming in bursts, a liar is caught within a bounded number of steps, and what is
left to check at the end, on the critical path, is short. The checkers' sessions are opened when
the session opens, beside its first steps, so that the first check does not wait for them.
"""

from __future__ import annotations

import logging

import torch
import trio

from corolla.core.generation import Rollback
from corolla.p2p.client import SwarmClient
from corolla.p2p.errors import SwarmError
from corolla.p2p.hop import HopFailure, HopSession
from corolla.p2p.names import short_id
from corolla.p2p.routing import RouteHop
from corolla.p2p.spotcheck import NOBODY, PASSED, PendingCheck, SpotCheck, agree

log = logging.getLogger("corolla.p2p.session")


class SpotChecking:
    """The spot-check half of InferenceSession: what it reads of the session is declared here."""

    client: SwarmClient
    spot_check: SpotCheck | None
    hops: list[HopSession]
    history: dict[int, list[torch.Tensor]]
    outputs: dict[int, list[torch.Tensor]]
    position: int
    max_length: int
    timeout: float
    adapter: str | None
    deep_prompts: torch.Tensor | None
    _checks: list[PendingCheck]
    _nursery: trio.Nursery | None
    _openers: trio.CancelScope

    def _rewind(self, start: int) -> None: ...

    async def _replace(self, k: int, reason: str, new_tokens: int, failed: bool,
                       detection: float = 0.0, avoid: set[str] | None = None) -> tuple[int, torch.Tensor]: ...

    def answered(self, hop: HopSession, out: torch.Tensor) -> None:
        """`hop` answered a step with `out` (sent by the client or pushed): count it, and keep it for
        the spot checks; a check is due after a hop's first step and every `interval` outputs."""
        first, hop.steps = hop.steps == 0, hop.steps + 1
        # a checker's session gets no deep prompts, so sessions with them are not spot-checked
        if self.spot_check is not None and self.deep_prompts is None:  # outputs are kept for the checks only
            kept = self.outputs[hop.hop.start]
            kept.append(out)
            covered = max(hop.checked, 0 if hop.checking is None else hop.checking.valid_end)
            hop.check_wanted |= self.spot_check.wants(first, sum(o.shape[1] for o in kept) - covered)

    def _open_checkers(self) -> None:
        """Open every hop's checker session now, beside the first steps (the session just opened)."""
        if self.spot_check is None or self.spot_check.rate <= 0 or self.deep_prompts is not None:
            return
        self._nursery.start_soon(self._open_early, list(self.hops))

    async def _open_early(self, hops: list[HopSession]) -> None:
        with self._openers:
            async with trio.open_nursery() as nursery:
                for hop in hops:
                    nursery.start_soon(self._open_one_early, hop)

    async def _open_one_early(self, hop: HopSession) -> None:
        try:
            await self._open_shadow(hop)
        except Exception as exc:  # noqa: BLE001 - the hop's first check tries again
            log.debug("checker of %s: %s", short_id(hop.hop.peer_id), exc)

    async def _open_shadow(self, hop: HopSession) -> None:
        """Find `hop`'s fastest checker and open a session there (hop.shadow stays None when there is
        none or it fails); while another task opens it, wait for that one instead."""
        if hop.shadow_opening is not None:
            await hop.shadow_opening.wait()
            return
        hop.shadow_opening = opening = trio.Event()
        try:
            checkers = await self.spot_check.checkers(self.client, hop.hop.server, hop.hop.start, hop.hop.end,
                                                      self.adapter)
            if checkers:
                try:
                    shadow = await HopSession.open(self.client, RouteHop(checkers[0], hop.hop.start, hop.hop.end),
                                                   self.max_length, self.timeout, self.adapter)
                except HopFailure:
                    return
                if hop not in self.hops or hop.shadow is not None:  # replaced meanwhile
                    await shadow.close(polite=False)
                    return
                hop.shadow, hop.shadow_end = shadow, 0
        finally:
            hop.shadow_opening = None
            opening.set()

    def _cancel_checks(self) -> None:
        """Stop the checks and the openings of checkers under way (the session closes)."""
        self._openers.cancel()
        for check in self._checks:
            check.scope.cancel()

    def _start_check(self, hop: HopSession) -> None:
        """Have another server recompute `hop`'s outputs since its last check, beside the next steps."""
        inputs = torch.cat(self.history[hop.hop.start], dim=1)
        outputs = torch.cat(self.outputs[hop.hop.start], dim=1)[:, hop.checked:]
        check = PendingCheck(hop, hop.checked, inputs.shape[1], inputs.shape[1])
        hop.check_wanted, hop.checking = False, check
        self._checks.append(check)
        if self._nursery is None:
            raise SwarmError("an inference session steps only inside `async with` (its checks run there)")
        self._nursery.start_soon(self._run_check, check, inputs, outputs)

    async def _run_check(self, check: PendingCheck, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        hop: HopSession = check.hop  # type: ignore[assignment]
        with check.scope:
            try:
                check.verdict = await self._shadow_check(hop, check, inputs, outputs)
                if check.verdict is None:  # it cannot tell: other servers recompute it all, a third decides
                    check.verdict = await self.spot_check.verify(self.client, hop.hop.server, hop.hop.start,
                                                                 hop.hop.end, inputs, outputs, adapter=self.adapter)
            except Exception as exc:  # noqa: BLE001 - a check that cannot finish must not end the session
                log.warning("spot-check of %s failed: %s", short_id(hop.hop.peer_id), exc)
        check.done.set()

    async def _shadow_check(self, hop: HopSession, check: PendingCheck, inputs: torch.Tensor,
                            outputs: torch.Tensor) -> str | None:
        """PASSED when the hop's checker session agrees on the outputs since `check.since`, fed only the
        inputs it has not seen; None when there is no checker or it disagrees (the checker is then dropped)."""
        if hop.shadow is None:
            await self._open_shadow(hop)
            if hop.shadow is None:
                return None
        shadow, fed = hop.shadow, min(hop.shadow_end, check.since)
        try:
            got = (await shadow.exchange(inputs[:, fed:], start=fed))[:, check.since - fed:]
        except HopFailure:
            got = None
        if got is None or not agree(outputs, got, hop.hop.server.precision, shadow.hop.server.precision):
            hop.shadow = None
            await shadow.close(polite=False)
            return None
        hop.shadow_end = min(check.end, check.valid_end)  # a rewind meanwhile cut what it holds
        return self.spot_check.passed(hop.hop.peer_id)

    async def checked(self, final: bool = False) -> int:
        """Position before which every hop's outputs were checked (the session's position when checks
        are off); Rollback when a check caught a liar, after replacing it and going back to its first
        wrong output. `final`: check what no check covered yet and wait for every check under way."""
        if self.spot_check is None or self.spot_check.rate <= 0 or self.deep_prompts is not None:
            return self.position  # nothing is checked (sessions with deep prompts are not: see answered)
        for _ in range(2 if final else 1):  # a check under way may have begun before the last steps
            if final:
                for h in self.hops:
                    if h.checked < self.position and h.checking is None:
                        self._start_check(h)
                for check in list(self._checks):
                    await check.done.wait()
            await self._take_verdicts()
        return min((h.checked for h in self.hops), default=self.position)

    async def _take_verdicts(self) -> None:
        """Act on the checks that are done: mark what passed, ban lying checkers, roll back a liar."""
        for check in [c for c in self._checks if c.done.is_set()]:
            self._checks.remove(check)
            hop: HopSession = check.hop  # type: ignore[assignment]
            if hop.checking is check:
                hop.checking = None
            caught = check.verdict
            if caught is None or isinstance(caught, str):
                if caught in (PASSED, NOBODY):
                    hop.checked = max(hop.checked, check.valid_end)
                continue
            if caught.peer_id != hop.hop.peer_id:  # a checker lied: this hop's answer stands
                self.client.ban(caught.peer_id)
                hop.checked = max(hop.checked, check.valid_end)
                continue
            await self._roll_back_liar(hop, min(check.since + caught.first, self.position),
                                       f"wrong activations (relative error {caught.error:.3g}, "
                                       f"{len(caught.agreeing)} other servers agree)")

    async def _roll_back_liar(self, hop: HopSession, position: int, reason: str) -> None:
        """Replace a lying hop, drop everything from its first wrong output on, and raise Rollback."""
        self._rewind(position)
        if hop in self.hops:
            await self._replace(self.hops.index(hop), reason, 0, failed=True)
        else:
            self.client.ban(hop.hop.peer_id)
        raise Rollback(position)
