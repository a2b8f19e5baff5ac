"""A span of transformer blocks [start, end) and the per-session attention caches a server keeps."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, PretrainedConfig
from transformers.cache_utils import DynamicCache

from corolla.core.adapters import AdapterSet
from corolla.core.dtypes import DTYPES
from corolla.core.errors import (
    CacheFullError,
    DtypeError,
    SessionExistsError,
    SessionTooLongError,
    ShapeError,
    UnknownSessionError,
)
from corolla.core.families import Family, family_for
from corolla.core.families.base import layer_index
from corolla.core.kv import GrowingLayer, gather_batch, growing_cache
from corolla.core.kv_pool import PooledPasses, SlotPool
from corolla.core.quantization import Quantization, check_device, quantize_linears, weight_bytes
from corolla.core.step_graph import StepGraph, step_graph_supported
from corolla.core.weights import load_tensors, names_with_prefix

ACCEPTED_DTYPES = tuple(DTYPES.values())


class Span(nn.Module):
    """Blocks [start, end) of a model, loaded from only the shards that hold them."""

    def __init__(self, config: PretrainedConfig, family: Family, start: int, end: int,
                 blocks: nn.ModuleList, positional: nn.Module | None):
        super().__init__()
        self.config = config  # span config: num_hidden_layers == end - start
        self.family = family
        self.start, self.end = start, end
        self.blocks = blocks
        self.positional = positional
        self.quant = Quantization.NONE
        self.adapters = AdapterSet()  # LoRA adapters on the blocks (core/adapters.py), chosen per session

    @classmethod
    def load(cls, path: Path | str, start: int, end: int, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, quant: Quantization | str = Quantization.NONE) -> Span:
        """Build blocks [start, end) on the meta device and fill them from their shards only."""
        path = Path(path)
        quant = Quantization(quant)
        check_device(quant, device)
        model_config = AutoConfig.from_pretrained(path)
        family = family_for(model_config)
        full_config = family.decoder_config(model_config)
        total = full_config.num_hidden_layers
        if not 0 <= start < end <= total:
            raise ShapeError(f"blocks {start}:{end} are not a span of this model's {total} blocks")
        config = family.span_config(full_config, start, end)
        with torch.device("meta"):
            blocks = nn.ModuleList(family.build_block(config, i) for i in range(end - start))
        for local, block in enumerate(blocks):
            prefix = family.block_prefix(start + local)
            tensors = load_tensors(path, names_with_prefix(path, prefix), dtype=dtype)
            state = family.block_state(config, {name[len(prefix):]: t for name, t in tensors.items()})
            block.load_state_dict(state, strict=True, assign=True)
        blocks = blocks.to(dtype=dtype).eval().requires_grad_(False)
        quantize_linears(blocks, quant, compute_dtype=dtype)
        blocks = blocks.to(device=device)
        positional = family.make_positional(config)
        if positional is not None:
            positional = positional.to(device)
        span = cls(config, family, start, end, blocks, positional)
        span.quant = quant
        return span

    def sub(self, start: int, end: int) -> Span:
        """Blocks [start, end) of this span, sharing its weights (no copy).

        The blocks keep their cache slots within this span, so a sub-span's session cache has a slot
        for every block of the span and fills only its own.
        """
        if not self.start <= start < end <= self.end:
            raise ShapeError(f"blocks {start}:{end} are not inside the span {self.start}:{self.end}")
        if (start, end) == (self.start, self.end):
            return self
        blocks = self.blocks[start - self.start:end - self.start]
        part = Span(self.config, self.family, start, end, blocks, self.positional)
        part.quant, part.adapters = self.quant, self.adapters
        return part

    @property
    def num_blocks(self) -> int:
        return self.end - self.start

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of activations inside the span (quantized weights keep their own storage type)."""
        return next(p for p in self.blocks.parameters() if p.is_floating_point()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.blocks.parameters()).device

    def weight_bytes(self) -> int:
        """Memory held by the span's weights, in bytes."""
        return weight_bytes(self.blocks)

    def check_hidden(self, hidden: torch.Tensor) -> None:
        """Raise ShapeError/DtypeError unless `hidden` is [batch, tokens, hidden_size] floats."""
        if hidden.dtype not in ACCEPTED_DTYPES:
            raise DtypeError(f"hidden states must be float32, float16 or bfloat16, got {hidden.dtype}")
        if hidden.dim() != 3 or hidden.shape[0] < 1 or hidden.shape[1] < 1:
            raise ShapeError(f"hidden states must be [batch, tokens, {self.hidden_size}], got {list(hidden.shape)}")
        if hidden.shape[2] != self.hidden_size:
            raise ShapeError(f"hidden size is {hidden.shape[2]}, this model's is {self.hidden_size}")

    @torch.inference_mode()
    def run(self, hidden: torch.Tensor, cache: DynamicCache | None = None,
            past_length: int | Sequence[int] = 0) -> torch.Tensor:
        """Hidden states through every block; returned in the dtype they came in.

        `past_length` per row (a sequence) means a batch of sessions left-padded to the longest past."""
        self.check_hidden(hidden)
        x = hidden.to(device=self.device, dtype=self.dtype)
        x = self.family.run_blocks(self.blocks, self.positional, self.config, x, cache, past_length)
        return x.to(device=hidden.device, dtype=hidden.dtype)

    @torch.inference_mode()
    def run_prompted(self, hidden: torch.Tensor, cache: DynamicCache, past_length: int,
                     prompts: torch.Tensor) -> torch.Tensor:
        """`run` with deep prompts [num_blocks, P, hidden]: before block i, prompts[i] is added to the
        new tokens that sit at positions < P (so their keys and values in the cache carry it)."""
        self.check_hidden(hidden)
        if prompts.dim() != 3 or prompts.shape[0] != self.num_blocks or prompts.shape[2] != self.hidden_size:
            raise ShapeError(f"deep prompts must be [{self.num_blocks}, length, {self.hidden_size}], "
                             f"got {list(prompts.shape)}")
        x = hidden.to(device=self.device, dtype=self.dtype)
        p = prompts.to(device=self.device, dtype=self.dtype)
        k = max(0, min(p.shape[1] - past_length, x.shape[1]))  # new tokens inside the prompt
        for i in range(self.num_blocks):
            if k:
                x = torch.cat([x[:, :k] + p[i, past_length:past_length + k], x[:, k:]], dim=1)
            x = self.family.run_blocks(self.blocks[i:i + 1], self.positional, self.config, x, cache, past_length)
        return x.to(device=hidden.device, dtype=hidden.dtype)

    def forward(self, hidden: torch.Tensor, adapter: str | None = None) -> torch.Tensor:
        """Stateless (no cache kept); every row uses the LoRA `adapter` (None: the base model)."""
        self.adapters.check(adapter)
        with self.adapters.use([adapter] * hidden.shape[0]):
            return self.run(hidden)

    def new_cache(self, room: int = 0) -> DynamicCache:
        """An empty cache for this span whose layers grow in place (core/kv.py), with room for
        `room` tokens from the first write."""
        return growing_cache(self.config, room)

    def kv_bytes_per_token(self) -> int:
        """Attention-cache bytes per token of one sequence in this span."""
        return self.family.kv_bytes_per_token(self.config, self.num_blocks, self.dtype)


@dataclass
class _Session:
    cache: DynamicCache
    max_length: int
    batch_size: int
    length: int = 0
    graph: StepGraph | None = None
    graph_refused: bool = False  # this session's one-token steps take the dynamic path
    pooled: bool = False  # its cache is rows of the runtime's pool (core/kv_pool.py)
    one_token_steps: int = 0
    adapter: str | None = None  # the LoRA adapter every step of this session uses


class SpanRuntime:
    """Runs a span for many sessions at once, each with its own KV cache and length budget.

    Cache room is reserved at open time (max_length x batch tokens), so a server refuses a session
    it could not finish instead of failing halfway through a conversation.
    """

    def __init__(self, span: Span, max_cache_tokens: int = 8192, static_steps: bool | None = None):
        self.span = span
        self.max_cache_tokens = max_cache_tokens
        # One-token steps with static shapes (core/step_graph.py): captured as CUDA graphs on a GPU,
        # the default there; run uncaptured elsewhere (only when asked: it is slower on a CPU).
        self.static_steps = span.device.type == "cuda" if static_steps is None else static_steps
        self._pool: SlotPool | None = None  # made at the first session that static steps can serve
        self._passes: PooledPasses | None = None
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    @property
    def reserved_tokens(self) -> int:
        return sum(s.max_length * s.batch_size for s in self._sessions.values())

    @property
    def free_cache_tokens(self) -> int:
        return self.max_cache_tokens - self.reserved_tokens

    @property
    def cache_bytes(self) -> int:
        """Bytes the open sessions' caches may grow to (their reservations)."""
        return self.reserved_tokens * self.span.kv_bytes_per_token()

    def open_session(self, session_id: str, max_length: int, batch_size: int = 1,
                     adapter: str | None = None) -> None:
        """Reserve cache room for a session; its steps use the LoRA `adapter` (None: the base model)."""
        if max_length < 1 or batch_size < 1:
            raise ShapeError(f"max_length and batch_size must be positive, got {max_length} and {batch_size}")
        self.span.adapters.check(adapter)
        with self._lock:
            if session_id in self._sessions:
                raise SessionExistsError(f"session {session_id!r} is already open")
            wanted = max_length * batch_size
            if wanted > self.free_cache_tokens:
                raise CacheFullError(
                    f"session needs {wanted} cache tokens but only {self.free_cache_tokens} of "
                    f"{self.max_cache_tokens} are free; try a shorter max length or another server"
                )
            # static steps need the whole reservation up front: their buffers never move
            room = max_length if self.static_steps else 0
            session = _Session(self.span.new_cache(room), max_length, batch_size, adapter=adapter)
            if self.static_steps and step_graph_supported(self.span.family, self.span.blocks, session.cache):
                if self._pool is None:
                    self._pool = SlotPool(self.span, self.max_cache_tokens)
                    self._passes = PooledPasses(self.span, self._pool)
                session.pooled = self._pool.take(session_id, session.cache, batch_size, max_length)
            self._sessions[session_id] = session

    def session_length(self, session_id: str) -> int:
        return self._get(session_id).length

    def forward(self, session_id: str, hidden: torch.Tensor, start: int | None = None,
                prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Append `hidden` [batch, tokens, hidden] to the session and return the span's output.

        `start`: the position these tokens take; the cache entries from there on are dropped first
        (the rejected guesses of a speculative step). None: after everything so far. `prompts`
        [num_blocks, P, hidden]: deep prompts, added before each block to the tokens at positions < P."""
        session = self._checked(session_id, hidden, start)
        if start is not None:
            self.truncate(session_id, start)
        prompted = prompts is not None and session.length < prompts.shape[1]
        plain = session.adapter is None and not prompted  # what a captured one-token step computes
        one_step = plain and hidden.shape[1] == 1 and session.length
        graph = self._graph(session) if one_step and not session.pooled else None
        if one_step and session.pooled and self._passes.fits(session.batch_size):
            out = self._passes.step([session_id], [hidden], [session])[0]
        elif graph is not None:
            out = graph.step(hidden, session.length)
        else:
            with self.span.adapters.use([session.adapter] * session.batch_size):
                if prompted:
                    out = self.span.run_prompted(hidden, session.cache, session.length, prompts)
                else:
                    out = self.span.run(hidden, session.cache, session.length)
        session.length += hidden.shape[1]
        return out

    def _graph(self, session: _Session) -> StepGraph | None:
        """The session's static one-token step, made at its first one-token step; None: dynamic path."""
        if not self.static_steps or session.graph_refused:
            return session.graph
        session.one_token_steps += 1
        if session.one_token_steps < 2:  # a one-off step (a stateless request) is not worth a capture
            return None
        if session.graph is None:
            span = self.span
            if not step_graph_supported(span.family, span.blocks, session.cache):
                session.graph_refused = True
                return None
            try:
                session.graph = StepGraph(span.blocks, span.positional, session.cache, session.batch_size,
                                          span.hidden_size, span.dtype, span.device,
                                          capture=span.device.type == "cuda")
            except RuntimeError:  # a kernel that cannot be captured (some quantized layers): stay dynamic
                session.graph_refused = True
                return None
        return session.graph

    @torch.inference_mode()  # the caches are inference tensors: they are written in place here
    def forward_many(self, steps: Sequence[tuple[str, torch.Tensor, int | None]]) -> list[torch.Tensor]:
        """Several sessions' steps (session id, hidden, start) as one forward pass; outputs in order.

        The steps must have the same number of new tokens. The sessions' caches are left-padded to
        the longest past into one batch cache, with the padding masked; afterwards each session's
        cache gets only its own new entries, so a session's output does not depend on its neighbours.
        """
        if len({hidden.shape[1] for _, hidden, _ in steps}) > 1:
            raise ShapeError("a batched step needs the same number of new tokens from every session")
        if len({sid for sid, _, _ in steps}) != len(steps):
            raise ShapeError("a batched step takes each session once")
        sessions = [self._checked(sid, hidden, start) for sid, hidden, start in steps]
        if len(steps) == 1:
            return [self.forward(*steps[0])]
        for (sid, _, start) in steps:
            if start is not None:
                self.truncate(sid, start)
        tokens = steps[0][1].shape[1]
        if (tokens == 1 and all(s.pooled and s.length and s.adapter is None for s in sessions)
                and self._passes.fits(sum(s.batch_size for s in sessions))):
            outs = self._passes.step([sid for sid, _, _ in steps], [h for _, h, _ in steps], sessions)
            for s in sessions:
                s.length += 1
            return outs
        pasts = [s.length for s in sessions for _ in range(s.batch_size)]
        longest = max(pasts)
        batch = self.span.new_cache()
        slots = [layer_index(block) for block in self.span.blocks]
        if longest:
            for slot in slots:
                gather_batch(batch, slot, sessions, longest, tokens)
        hidden = torch.cat([h.to(device=steps[0][1].device, dtype=steps[0][1].dtype) for _, h, _ in steps])
        with self.span.adapters.use([s.adapter for s in sessions for _ in range(s.batch_size)]):
            out = self.span.run(hidden, batch, pasts)
        row = 0
        for s in sessions:
            rows = slice(row, row + s.batch_size)
            for slot in slots:
                layer = batch.layers[slot]
                # only this session's new entries go back: its neighbours' padding never reaches it
                s.cache.update(layer.keys[rows, :, longest:], layer.values[rows, :, longest:], slot)
            s.length += tokens
            row += s.batch_size
        return list(torch.split(out, [s.batch_size for s in sessions]))

    def truncate(self, session_id: str, length: int) -> None:
        """Keep the first `length` tokens of the session's cache (drop the entries after them)."""
        session = self._get(session_id)
        if not 0 <= length <= session.length:
            raise ShapeError(f"session {session_id!r} holds {session.length} tokens; cannot go back to {length}")
        if length == session.length:
            return
        for layer in session.cache.layers:
            keys = getattr(layer, "keys", None)
            if keys is None or keys.numel() == 0:
                continue
            if keys.shape[-2] != session.length:  # a sliding-window layer already dropped old entries
                raise ShapeError("this model's sliding-window cache cannot roll back; turn speculation off")
            if isinstance(layer, GrowingLayer):
                layer.crop_to(length)
            else:
                layer.keys = layer.keys[..., :length, :]
                layer.values = layer.values[..., :length, :]
        session.length = length

    def _checked(self, session_id: str, hidden: torch.Tensor, start: int | None) -> _Session:
        session = self._get(session_id)
        self.span.check_hidden(hidden)
        if hidden.shape[0] != session.batch_size:
            raise ShapeError(f"session {session_id!r} was opened with batch {session.batch_size}, "
                             f"got batch {hidden.shape[0]}")
        if start is not None and not (isinstance(start, int) and 0 <= start <= session.length):
            raise ShapeError(f"session {session_id!r} holds {session.length} tokens; a step cannot start at {start!r}")
        begin = session.length if start is None else start
        if begin + hidden.shape[1] > session.max_length:
            raise SessionTooLongError(
                f"session {session_id!r} would reach {begin + hidden.shape[1]} tokens, "
                f"past its maximum length {session.max_length}"
            )
        return session

    def replay(self, session_id: str, stored_inputs: list[torch.Tensor]) -> torch.Tensor:
        """Rebuild a session's cache from the inputs another server saw, in one prefill."""
        if not stored_inputs:
            raise ShapeError("nothing to replay: no stored inputs")
        return self.forward(session_id, torch.cat(stored_inputs, dim=1))

    def close_session(self, session_id: str) -> None:
        with self._lock:
            if self._sessions.pop(session_id, None) is None:
                raise UnknownSessionError(f"session {session_id!r} is not open")
            if self._pool is not None:
                self._pool.release(session_id)

    def _get(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSessionError(f"session {session_id!r} is not open (never opened, closed, or expired)")
        return session

