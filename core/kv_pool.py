"""One attention-cache pool per span for the sessions that take static one-token steps, and the
captured steps over it, one per padded batch size and cache length: any set of sessions replays them.

Each pooled session owns fixed rows ("slots") of one [slots + 1, kv_heads, room, head_dim] tensor
per block; its `GrowingLayer`s are views of its rows, so every other path (prefills, speculative
steps, rollback, the dynamic batched step) reads and writes the same memory. A one-token step of
any set of pooled sessions runs as one static pass of B rows (B the next power of two at or above
the rows taken, padding rows pointed at the spare last slot): the slots and positions are device
tensors, each row writes its new entries into its own slot at its own position and attends to the
first L entries of its slot (L a power of two above the longest position) under a mask of its own
filled positions. So a pass depends only on (B, L), and the graph captured for that pair serves
every set of sessions that comes later; nothing is captured when the set changes.

A row reads only its own slot, under its own mask: its output does not depend on its neighbours
(up to the matmul kernels, which may tile a batch of 8 rows differently from one row).

The same pass runs uncaptured (`capture=False`) on any device, which is how it is tested on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from corolla.core.families.base import cache_keyword, layer_index
from corolla.core.kv import GrowingLayer
from corolla.core.step_graph import capture_graph, masked_step

MIN_ROOM = 64  # the smallest slot length (tokens); a pool's room is a power of two
FIRST_SLOTS = 8  # slots a pool is made with; it doubles (moving, so its graphs are made anew) as needed
MAX_ROWS = 32  # the largest padded batch a pass is captured for (p2p/batching.py's MAX_BATCH)
MIN_LENGTH = 64  # the shortest cache length a pass reads
MAX_GRAPHS = 24  # captured passes kept, (rows, length) pairs, the most recently used ones


def _pow2(n: int, least: int) -> int:
    return max(least, 1 << max(0, n - 1).bit_length())


class SlotPool:
    """Keys and values of pooled sessions, per cache slot (block) of the span: [capacity + 1, kv_heads,
    room, head_dim], the last row a scratch slot that padding rows write to. Holds at most
    `max_tokens` tokens (capacity x room)."""

    def __init__(self, span, max_tokens: int):
        self.slot_ids = [layer_index(b) for b in span.blocks]
        config, dtype, device = span.config, span.dtype, span.device
        heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        self.dtype, self.device, self.max_tokens = dtype, device, max_tokens
        self.room = 0
        self.capacity = 0
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.owners: dict[str, tuple[int, int, object]] = {}  # session id -> (first slot, rows, cache)
        self.moves = 0  # times the tensors moved: passes captured before a move are stale

    def take(self, session_id: str, cache, rows: int, max_length: int) -> bool:
        """Give the session `rows` slots of at least `max_length` tokens and point its layers at them;
        False where the pool cannot hold it (the session keeps buffers of its own)."""
        room = max(self.room, _pow2(max_length, MIN_ROOM))
        first = self._free_run(rows, self.capacity) if room == self.room else None
        if first is None:
            limit = self.max_tokens // room
            capacity = max(self.capacity, min(FIRST_SLOTS, limit), 1)
            while self._free_run(rows, capacity) is None and capacity < limit:
                capacity = min(2 * capacity, limit)
            if capacity > limit or self._free_run(rows, capacity) is None:
                return False
            self._resize(capacity, room)
            first = self._free_run(rows, capacity)
        self.owners[session_id] = (first, rows, cache)
        self._point(first, rows, cache, 0)
        return True

    def release(self, session_id: str) -> None:
        self.owners.pop(session_id, None)

    def first_slot(self, session_id: str) -> int | None:
        entry = self.owners.get(session_id)
        return None if entry is None else entry[0]

    def _free_run(self, rows: int, capacity: int) -> int | None:
        """The first of `rows` free slots in a row among the first `capacity`, or None."""
        taken = [False] * capacity
        for first, n, _ in self.owners.values():
            taken[first:first + n] = [True] * n
        run = 0
        for i, t in enumerate(taken):
            run = 0 if t else run + 1
            if run == rows:
                return i - rows + 1
        return None

    def _resize(self, capacity: int, room: int) -> None:
        """New tensors (the pooled sessions' entries copied over, their layers pointed at them)."""
        shape = (capacity + 1, self.kv_heads, room, self.head_dim)
        for slot in self.slot_ids:
            for store in (self.keys, self.values):
                new = torch.zeros(shape, dtype=self.dtype, device=self.device)  # zeros: read under a mask
                old = store.get(slot)
                if old is not None:
                    new[:self.capacity, :, :self.room].copy_(old[:self.capacity])
                store[slot] = new
        self.capacity, self.room = capacity, room
        self.moves += 1
        for first, rows, cache in self.owners.values():
            self._point(first, rows, cache, None)

    def _point(self, first: int, rows: int, cache, length: int | None) -> None:
        for slot in self.slot_ids:
            layer: GrowingLayer = cache.layers[slot]
            keep = layer.length if length is None else length
            layer.attach(self.keys[slot][first:first + rows], self.values[slot][first:first + rows], keep)


class _PoolView:
    """The cache as a pooled pass sees it: row i writes into slot[i] at position[i] and reads the
    first `length` entries of its slot."""

    def __init__(self, pool: SlotPool, slot: torch.Tensor, position: torch.Tensor, length: int):
        self.pool, self.slot, self.position, self.length = pool, slot, position[:, 0], length

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.pool.keys[layer_idx], self.pool.values[layer_idx]
        keys[self.slot, :, self.position] = key_states[:, :, 0]
        values[self.slot, :, self.position] = value_states[:, :, 0]
        n = self.length
        return keys[:, :, :n].index_select(0, self.slot), values[:, :, :n].index_select(0, self.slot)


class PooledPass:
    """One-token steps of up to `rows` pooled rows whose positions are below `length`, static shapes."""

    def __init__(self, blocks: nn.ModuleList, positional: nn.Module, pool: SlotPool, rows: int, length: int,
                 hidden_size: int, dtype: torch.dtype, device: torch.device):
        self.blocks, self.positional, self.pool = blocks, positional, pool
        self.rows, self.length, self.moves = rows, length, pool.moves
        self.hidden = torch.zeros(rows, 1, hidden_size, dtype=dtype, device=device)
        self.slot = torch.full((rows,), pool.capacity, dtype=torch.long, device=device)  # padding: scratch
        self.position = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.range = torch.arange(length, device=device)
        self.cache = _PoolView(pool, self.slot, self.position, length)
        self.keyword = cache_keyword(type(blocks[0]).forward)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None
        pin = device.type == "cuda"
        self.host_in = torch.zeros(self.hidden.shape, dtype=dtype, pin_memory=pin)
        self.host_out = torch.empty(self.hidden.shape, dtype=dtype, pin_memory=pin)
        self.host_index = torch.zeros(2, rows, dtype=torch.long, pin_memory=pin)
        self.host_index[0] = pool.capacity

    def _body(self) -> torch.Tensor:
        return masked_step(self, self.range)

    def _load(self, hidden: torch.Tensor, slots: list[int], positions: list[int]) -> None:
        n = hidden.shape[0]
        self.host_index[0, :n] = torch.tensor(slots)
        self.host_index[0, n:] = self.pool.capacity
        self.host_index[1, :n] = torch.tensor(positions)
        self.host_index[1, n:] = 0
        if hidden.device.type == "cpu" and self.hidden.device.type != "cpu":
            self.host_in[:n].copy_(hidden)  # pinned: the copy to the device runs without staging
            hidden = self.host_in[:n]
        self.hidden[:n].copy_(hidden, non_blocking=True)
        self.slot.copy_(self.host_index[0], non_blocking=True)
        self.position[:, 0].copy_(self.host_index[1], non_blocking=True)

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture the pass (a CUDA device). The inputs loaded now are the next step's: the warm-up
        runs write exactly the entries that step writes."""
        self.graph, self.out = capture_graph(self._body)

    @torch.inference_mode()
    def run(self, hidden: torch.Tensor, slots: list[int], positions: list[int], capture: bool) -> torch.Tensor:
        """`hidden` [n, 1, hidden] (n <= rows, in host or device memory) of the rows in `slots` at
        `positions` -> the blocks' output for those rows, in hidden's dtype and device."""
        self._load(hidden.to(dtype=self.hidden.dtype), slots, positions)
        if capture and self.graph is None:
            self.capture()
        if self.graph is not None:
            self.graph.replay()
            out = self.out
        else:
            out = self._body()
        n = hidden.shape[0]
        if hidden.device.type == "cpu" and out.device.type != "cpu":
            self.host_out[:n].copy_(out[:n], non_blocking=True)
            torch.cuda.current_stream().synchronize()  # the one sync of a pass: the bytes go out now
            return self.host_out[:n].to(hidden.dtype, copy=True)
        return out[:n].to(device=hidden.device, dtype=hidden.dtype, copy=True)


class PooledPasses:
    """The pool's passes by (rows, length), made at a pair's second use (a one-off is not worth a
    capture) and kept for the most recently used MAX_GRAPHS pairs."""

    def __init__(self, span, pool: SlotPool) -> None:
        self.span, self.pool = span, pool
        self._passes: dict[tuple[int, int], list] = {}  # (rows, length) -> [uses, PooledPass or None]
        self._refused: set[tuple[int, int]] = set()
        self.captures = 0  # passes captured so far (tests and benchmarks read it)

    def fits(self, rows: int) -> bool:
        return rows <= MAX_ROWS

    def step(self, ids: list[str], hidden: list[torch.Tensor], sessions: list) -> list[torch.Tensor]:
        """One-token steps of pooled sessions (SpanRuntime's: `batch_size`, `length`, `cache`) as one
        pass; each output in its input's dtype. The sessions' layers are marked filled, their lengths
        are the caller's to move."""
        slots, positions = [], []
        for sid, s in zip(ids, sessions):
            first = self.pool.first_slot(sid)
            slots += range(first, first + s.batch_size)
            positions += [s.length] * s.batch_size
        out = self.run(torch.cat([h.to(device=hidden[0].device, dtype=hidden[0].dtype) for h in hidden]),
                       slots, positions)
        for s in sessions:
            for slot in self.pool.slot_ids:
                s.cache.layers[slot].mark_filled(s.length + 1)
        return [o.to(dtype=h.dtype) for o, h in zip(torch.split(out, [s.batch_size for s in sessions]), hidden)]

    def run(self, hidden: torch.Tensor, slots: list[int], positions: list[int]) -> torch.Tensor:
        span = self.span
        key = (_pow2(len(slots), 1), min(_pow2(max(positions) + 1, MIN_LENGTH), self.pool.room))
        entry = self._passes.pop(key, None) or [0, None]
        self._passes[key] = entry  # most recent last
        while len(self._passes) > MAX_GRAPHS:
            del self._passes[next(iter(self._passes))]
        entry[0] += 1
        if entry[1] is not None and entry[1].moves != self.pool.moves:
            entry[1] = None  # the pool moved since: its addresses are stale
        if entry[1] is None:
            entry[1] = PooledPass(span.blocks, span.positional, self.pool, *key, span.hidden_size, span.dtype,
                                  span.device)
        step = entry[1]
        capture = span.device.type == "cuda" and entry[0] >= 2 and step.graph is None and key not in self._refused
        if capture:
            try:
                out = step.run(hidden, slots, positions, True)
            except RuntimeError:  # a kernel that cannot be captured (some quantized layers): stay uncaptured
                self._refused.add(key)
                torch.cuda.synchronize()
                return step.run(hidden, slots, positions, False)  # rewrites the same entries
            self.captures += 1
            return out
        return step.run(hidden, slots, positions, False)
