"""One-token decoding steps of one session with static shapes, captured once as a CUDA graph.

A decoding step on a GPU server is dozens of small kernels per block; launching them from Python
costs more than they take on a large GPU. With the session's cache preallocated to its reserved
length (`GrowingLayer` with room for `max_length`), a one-token step has fixed shapes if attention
reads the whole buffer under a mask of the filled positions, and the new entries are written at a
position held in a device tensor. Such a step is captured once per session and replayed: the host
copies the hidden state in, sets the position, replays and copies the output out (one sync).

Sessions in the runtime's pool (core/kv_pool.py) take pooled passes instead, shared by every set
of sessions; this one-session graph serves those whose cache the pool cannot hold.

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



def capture_graph(body) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """Warm `body` up on a side stream, then capture it as a CUDA graph; the graph and its output."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_RUNS):
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: a worker thread's GPU work meanwhile (a backward request) is not an error
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = body()
    return graph, out

def masked_step(graph, entries: torch.Tensor) -> torch.Tensor:
    """One-token step of `graph`'s blocks over its static buffers: each row attends to the cache
    entries up to its own position (`entries` numbers them); the rest of the buffer is masked."""
    mask = entries[None, None, None, :] <= graph.position[:, None, :, None]
    tables = graph.positional(graph.hidden, position_ids=graph.position)
    x = graph.hidden
    for block in graph.blocks:
        x = block(x, attention_mask=mask, position_ids=graph.position, use_cache=True,
                  position_embeddings=tables, **{graph.keyword: graph.cache})
        if isinstance(x, tuple):
            x = x[0]
    return x

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
        return masked_step(self, self.slots)

    @torch.inference_mode()
    def _capture(self) -> None:
        # the position of the warm-up writes is the session's next one: the real step overwrites it
        length = self.layers[0].length
        self._set(length)
        self.graph, self.out = capture_graph(self._body)
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
