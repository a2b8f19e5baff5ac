"""Concurrent sessions' inference steps on one server, run together as one forward pass.

A step waits a few milliseconds for the other sessions that are decoding right now, then the steps
that fit together (same blocks, same number of new tokens) go through `SpanRuntime.forward_many`
at once: on a GPU a batch of 8 one-token steps costs about what one does, since a decoding step
reads every weight once whatever the batch. Nothing runs in the background: whichever waiting
step finds no batch running leads the next round (shielded, so that its client leaving cannot
strand the others), and leaves the lead once its own step is done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import trio

from corolla.core.errors import CorollaError
from corolla.core.span import SpanRuntime

WINDOW_S = 0.003  # longest wait for the other decoding sessions' steps, at least
# On a slow machine (a CPU) a pass takes tens to hundreds of ms and the clients' own work between
# steps spreads their arrivals over a similar time: waiting a share of a pass for the expected steps
# keeps the batch whole, where a fixed few ms would split it into ever smaller batches.
WAIT_SHARE = 0.5  # longest wait as a share of the last pass's duration
MAX_WINDOW_S = 0.25
RECENT_S = 0.5  # a session that stepped this recently is expected to step again soon
RECENT_PASSES = 4  # ... or within this many passes' durations, whichever is longer
DECODE_GAP_S = 0.25  # s between a session's steps (its client samples, then sends) while it decodes
MAX_BATCH = 32  # steps in one pass
INLINE_MAX_ELEMENTS = 16 * 1024  # hidden-state elements computed without a thread hand-off


@dataclass(eq=False)
class _Step:
    runtime: SpanRuntime
    session_id: str
    hidden: torch.Tensor
    start: int | None
    prompts: torch.Tensor | None = None  # deep prompts: such a step runs alone
    out: torch.Tensor | None = None
    error: Exception | None = None
    seconds: float = 0.0
    batch: int = 0
    finished: bool = field(default=False)

    @property
    def kind(self) -> tuple[int, int]:
        # a step carrying deep prompts counts as a long one: it is never batched
        return id(self.runtime), self.hidden.shape[1] if self.prompts is None else 1 << 30


class StepBatcher:
    """Gathers inference steps for up to `window` s and runs those that fit together at once."""

    def __init__(self, compute: trio.Lock, *, window: float = WINDOW_S, max_batch: int = MAX_BATCH,
                 batch_max_tokens: int = 8) -> None:
        self.compute = compute  # the server's one compute lock: batches and other work take turns
        self.window = window
        self.max_batch = max_batch
        self.batch_max_tokens = batch_max_tokens  # longer steps (prefills, replays) run alone
        self._queue: list[_Step] = []
        self._leading = False
        self._round_done = trio.Event()
        self._arrived = trio.Event()
        self._last_step: dict[str, tuple[float, tuple[int, int]]] = {}  # session -> (when, kind)
        self.last_pass_s = 0.0  # duration of the last pass, s
        self.batches = 0  # passes run, and steps they held (for the server's own statistics)
        self.steps = 0
        self.last_done = float("-inf")  # when the last pass ended (time.monotonic)

    async def forward(self, runtime: SpanRuntime, session_id: str, hidden: torch.Tensor,
                      start: int | None = None, prompts: torch.Tensor | None = None) -> tuple[torch.Tensor, float, int]:
        """The span's output for one session's step, the seconds its pass took and how many steps
        shared that pass. Raises what `SpanRuntime.forward` would for this step alone."""
        step = _Step(runtime, session_id, hidden, start, prompts)
        self._queue.append(step)
        self._last_step[session_id] = (time.monotonic(), step.kind)
        self._arrived.set()
        try:
            while not step.finished:
                if self._leading:
                    await self._round_done.wait()
                    continue
                self._leading = True
                try:
                    with trio.CancelScope(shield=True):
                        await self._round()
                finally:
                    self._leading = False
                    self._round_done.set()
                    self._round_done = trio.Event()
        finally:
            if step in self._queue:  # its client left before it ran
                self._queue.remove(step)
        if step.error is not None:
            raise step.error
        if step.out is None:
            raise CorollaError("the step finished without an output")  # a bug, reported to its session
        return step.out, step.seconds, step.batch

    async def make_way(self, limit: float) -> None:
        """Wait, at most `limit` s, while sessions are decoding (a step queued or one done less than
        DECODE_GAP_S ago): long work waits here between its chunks, so that a session's next step
        finds the compute free instead of queued behind a chunk."""
        deadline = time.monotonic() + limit
        while (now := time.monotonic()) < deadline and (self._queue or now - self.last_done < DECODE_GAP_S):
            await trio.sleep(min(0.005, deadline - now))

    def forget(self, session_id: str) -> None:
        """The session ended: do not wait for its steps any more."""
        self._last_step.pop(session_id, None)

    def _expected(self, kind: tuple[int, int]) -> int:
        """Steps of this kind worth waiting for: sessions that took such a step just now."""
        if kind[1] > self.batch_max_tokens:
            return 1
        now, recent = time.monotonic(), max(RECENT_S, RECENT_PASSES * self.last_pass_s)
        for sid in [sid for sid, (t, _) in self._last_step.items() if now - t >= recent]:
            del self._last_step[sid]
        return min(sum(k == kind for _, k in self._last_step.values()), self.max_batch)

    def _take(self) -> list[_Step]:
        kind = self._queue[0].kind
        if kind[1] > self.batch_max_tokens:
            return [self._queue.pop(0)]
        batch = [s for s in self._queue if s.kind == kind][:self.max_batch]
        for s in batch:
            self._queue.remove(s)
        return batch

    async def _round(self) -> None:
        """Wait for the other recently active sessions (up to the window), then run one batch."""
        kind = self._queue[0].kind
        window = min(max(self.window, WAIT_SHARE * self.last_pass_s), MAX_WINDOW_S)
        with trio.move_on_after(window):
            while sum(s.kind == kind for s in self._queue) < self._expected(kind):
                self._arrived = trio.Event()
                await self._arrived.wait()
        async with self.compute:
            batch = self._take()
            t0 = time.perf_counter()
            try:
                if sum(s.hidden.numel() for s in batch) <= INLINE_MAX_ELEMENTS:
                    _run(batch)
                else:
                    await trio.to_thread.run_sync(_run, batch)
            except Exception as exc:  # noqa: BLE001 - every step of the batch must finish, with it
                for s in batch:
                    s.error = exc
            seconds = time.perf_counter() - t0
        if kind[1] <= self.batch_max_tokens:  # a prefill's duration says nothing about decoding
            self.last_pass_s = seconds
        self.batches += 1
        self.steps += len(batch)
        self.last_done = time.monotonic()
        for s in batch:
            s.seconds, s.batch, s.finished = seconds, len(batch), True


def _run(batch: list[_Step]) -> None:
    """One pass over the batch; if the batch as a whole is refused, each step alone, so that one
    session's bad step costs only that session."""
    runtime = batch[0].runtime
    if len(batch) > 1:
        try:
            outs = runtime.forward_many([(s.session_id, s.hidden, s.start) for s in batch])
        except CorollaError:
            pass
        else:
            for s, out in zip(batch, outs):
                s.out = out
            return
    for s in batch:
        try:
            s.out = runtime.forward(s.session_id, s.hidden, s.start, s.prompts)
        except CorollaError as exc:
            s.error = exc
        except Exception as exc:  # noqa: BLE001 - a bug costs its own session, which reports it
            s.error = exc
