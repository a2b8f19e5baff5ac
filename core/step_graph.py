"""One-token decoding steps of one session with static shapes, captured once as a CUDA graph.

A decoding step on a GPU server is dozens of small kernels per block; launching them from Python
costs more than they take on a large GPU. With the session's cache preallocated to its reserved
length (`GrowingLayer` with room for `max_length`), a one-token step has fixed shapes if attention
reads the whole buffer under a mask of the filled positions, and the new entries are written at a
position held in a device tensor. Such a step is captured once per session and replayed: the host
copies the hidden state in, sets the position, replays and copies the output out (one sync).

The same step runs uncaptured (`capture=False`) on any device, which is how its exactness against
the dynamic path is tested without a GPU.
"""

from __future__ import annotations

import torch
from torch import nn

from corolla.core.families.base import cache_keyword, layer_index
from corolla.core.families.llama import RotaryFamily
from corolla.core.kv import GrowingLayer

WARMUP_RUNS = 2  # eager runs on a side stream before capture (lazy initialisation, kernel choice)


class _InPlace:
    """The cache as a captured step sees it: new entries go to `index`, attention reads the buffers."""

    def __init__(self, layers: dict[int, GrowingLayer], index: torch.Tensor):
        self.layers = layers
        self.index = index

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.layers[layer_idx].buffers()
        keys.index_copy_(2, self.index, key_states)
        values.index_copy_(2, self.index, value_states)
        return keys, values


def step_graph_supported(family, blocks: nn.ModuleList, cache) -> bool:
    """Whether this span and session cache can take static one-token steps: a rotary family whose
    blocks all write to preallocated growing layers (no sliding windows)."""
    if not isinstance(family, RotaryFamily):
        return False
    return all(isinstance(cache.layers[layer_index(b)], GrowingLayer) for b in blocks)


class StepGraph:
    """One session's one-token step over `blocks`, with static input, position and output tensors."""

    def __init__(self, blocks: nn.ModuleList, positional: nn.Module, cache, batch: int, hidden_size: int,
                 dtype: torch.dtype, device: torch.device, capture: bool):
        self.blocks = blocks
        self.positional = positional
        layers = {layer_index(b): cache.layers[layer_index(b)] for b in blocks}
        self.layers = list(layers.values())
        room = self.layers[0].buffers()[0].shape[2]
        self.hidden = torch.zeros(batch, 1, hidden_size, dtype=dtype, device=device)
        self.position = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.slots = torch.arange(room, device=device)
        self.cache = _InPlace(layers, self.index)
        self.keyword = cache_keyword(type(blocks[0]).forward)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None
        self.host_in = self.host_out = None
        if capture:
            self._capture()

    def _body(self) -> torch.Tensor:
        # attend to every filled position and the new one; the rest of the buffer is masked
        mask = (self.slots[None, None, None, :] <= self.position[:, None, :, None])
        tables = self.positional(self.hidden, position_ids=self.position)
        x = self.hidden
        for block in self.blocks:
            x = block(x, attention_mask=mask, position_ids=self.position, use_cache=True,
                      position_embeddings=tables, **{self.keyword: self.cache})
            if isinstance(x, tuple):
                x = x[0]
        return x

    @torch.inference_mode()
    def _capture(self) -> None:
        # the position of the warm-up writes is the session's next one: the real step overwrites it
        length = self.layers[0].length
        self._set(length)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self._body()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: a worker thread's GPU work meanwhile (a backward request) is not an error
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.out = self._body()
        # pinned host buffers: the copies to and from the network's tensors run without staging
        self.host_in = torch.empty(self.hidden.shape, dtype=self.hidden.dtype, pin_memory=True)
        self.host_out = torch.empty(self.out.shape, dtype=self.out.dtype, pin_memory=True)

    def _set(self, length: int) -> None:
        self.position.fill_(length)
        self.index.fill_(length)

    @torch.inference_mode()
    def step(self, hidden: torch.Tensor, length: int) -> torch.Tensor:
        """`hidden` [batch, 1, hidden] at position `length` -> the blocks' output, in hidden's dtype and device."""
        source = hidden
        if self.graph is None:
            self.hidden.copy_(hidden)
            self._set(length)
            out = self._body()
        else:
            if hidden.device.type == "cpu":
                self.host_in.copy_(hidden)
                hidden = self.host_in
            self.hidden.copy_(hidden, non_blocking=True)
            self._set(length)
            self.graph.replay()
            out = self.out
        for layer in self.layers:
            layer.mark_filled(length + 1)
        if self.graph is not None and source.device.type == "cpu":
            self.host_out.copy_(out, non_blocking=True)
            torch.cuda.current_stream().synchronize()  # the one sync of a step: the bytes go out now
            return self.host_out.to(source.dtype, copy=True)
        return out.to(device=source.device, dtype=source.dtype, copy=True)


class _RowWise:
    """The batch cache as a captured batched step sees it: each row's new entries go to its position."""

    def __init__(self, layers: dict[int, GrowingLayer], position: torch.Tensor):
        self.layers = layers
        self.rows = torch.arange(position.shape[0], device=position.device)
        self.position = position[:, 0]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.layers[layer_idx].buffers()
        keys[self.rows, :, self.position] = key_states[:, :, 0]
        values[self.rows, :, self.position] = value_states[:, :, 0]
        return keys, values


class BatchStepGraph(StepGraph):
    """Several sessions' one-token steps as one static pass: each pass copies every session's whole
    buffers into one batch buffer, runs the blocks with a position per row, and writes each row's
    new entries back into its session's buffers. Captured once per set of sessions that decode
    together (on a GPU the copies cost far less than launching a dynamic batched step)."""

    def __init__(self, blocks: nn.ModuleList, positional: nn.Module, caches: list, rows: list[int],
                 hidden_size: int, dtype: torch.dtype, device: torch.device, capture: bool):
        self.blocks, self.positional = blocks, positional
        self.slot_ids = [layer_index(b) for b in blocks]
        self.own = [[cache.layers[s] for s in self.slot_ids] for cache in caches]  # per session, per block
        total, room = sum(rows), max(layers[0].buffers()[0].shape[2] for layers in self.own)
        self.row_slices, start = [], 0
        for n in rows:
            self.row_slices.append(slice(start, start + n))
            start += n
        like = self.own[0][0].buffers()[0]
        batch: dict[int, GrowingLayer] = {}
        for slot in self.slot_ids:
            batch[slot] = GrowingLayer()
            batch[slot].allocate(like, total, room, 0)
        self.batch = batch
        self.layers = [layer for layers in self.own for layer in layers]
        self.hidden = torch.zeros(total, 1, hidden_size, dtype=dtype, device=device)
        self.position = torch.zeros(total, 1, dtype=torch.long, device=device)
        self.slots = torch.arange(room, device=device)
        self.cache = _RowWise(batch, self.position)
        self.keyword = cache_keyword(type(blocks[0]).forward)
        self.graph, self.out, self.host_in, self.host_out = None, None, None, None
        self.lengths = [layers[0].length for layers in self.own]
        if capture:
            self._capture()

    def _body(self) -> torch.Tensor:
        for rows, layers in zip(self.row_slices, self.own):
            for slot, layer in zip(self.slot_ids, layers):
                keys, values = layer.buffers()
                bk, bv = self.batch[slot].buffers()
                bk[rows, :, :keys.shape[2]].copy_(keys)
                bv[rows, :, :values.shape[2]].copy_(values)
        out = super()._body()
        for rows, layers in zip(self.row_slices, self.own):
            index = self.position[rows.start, :1]  # a session's rows share one position
            for slot, layer in zip(self.slot_ids, layers):
                keys, values = layer.buffers()
                bk, bv = self.batch[slot].buffers()
                keys.index_copy_(2, index, bk[rows].index_select(2, index))
                values.index_copy_(2, index, bv[rows].index_select(2, index))
        return out

    def _set(self, length: int | list[int]) -> None:
        lengths = self.lengths if isinstance(length, int) else length
        for rows, n in zip(self.row_slices, lengths):
            self.position[rows].fill_(n)

    @torch.inference_mode()
    def run_batch(self, hidden: list[torch.Tensor], lengths: list[int]) -> list[torch.Tensor]:
        """Each session's [rows, 1, hidden] at its length -> its output, in its input's dtype and device."""
        x = torch.cat([h.to(dtype=self.hidden.dtype) for h in hidden])
        if self.graph is None:
            self.hidden.copy_(x)
            self._set(lengths)
            out = self._body()
        else:
            if x.device.type == "cpu":
                self.host_in.copy_(x)
                x = self.host_in
            self.hidden.copy_(x, non_blocking=True)
            self._set(lengths)
            self.graph.replay()
            out = self.out
        for layers, n in zip(self.own, lengths):
            for layer in layers:
                layer.mark_filled(n + 1)
        if self.graph is not None and hidden[0].device.type == "cpu":
            self.host_out.copy_(out, non_blocking=True)
            torch.cuda.current_stream().synchronize()
            out = self.host_out
        return [out[rows].to(device=h.device, dtype=h.dtype, copy=True) for rows, h in zip(self.row_slices, hidden)]


MAX_BATCH_GRAPHS = 4  # sets of sessions whose batched step is kept captured (the most recent ones)


class BatchGraphs:
    """The captured batched steps of the sets of sessions that decode together, made at a set's
    second batched one-token step (a set seen once is not worth a capture)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, ...], list] = {}  # ids -> [sessions, uses, graph or False]

    def get(self, span, ids: tuple[str, ...], sessions: list) -> BatchStepGraph | None:
        """The set's graph (made now if due), or None: this step takes the dynamic path."""
        entry = self._entries.get(ids)
        if entry is None or any(a is not b for a, b in zip(entry[0], sessions)):
            entry = self._entries[ids] = [sessions, 0, None]
            while len(self._entries) > MAX_BATCH_GRAPHS:
                del self._entries[next(iter(self._entries))]
        entry[1] += 1
        if entry[2] is None and entry[1] >= 2:
            entry[2] = False
            if all(step_graph_supported(span.family, span.blocks, s.cache) for s in sessions):
                try:
                    entry[2] = BatchStepGraph(span.blocks, span.positional, [s.cache for s in sessions],
                                              [s.batch_size for s in sessions], span.hidden_size, span.dtype,
                                              span.device, capture=span.device.type == "cuda")
                except RuntimeError:  # a kernel that cannot be captured: this set stays dynamic
                    pass
        return entry[2] or None

    def forget(self, session_id: str) -> None:
        """The session closed: drop the graphs that hold its buffers."""
        for ids in [ids for ids in self._entries if session_id in ids]:
            del self._entries[ids]
