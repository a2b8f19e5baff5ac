"""Attention caches that grow in place: appending a step writes its entries into room kept ahead.

transformers' DynamicLayer concatenates on every step, so each decoding step copies the whole
cache of every block; a server that decodes for many sessions spends a large share of a step on
those copies. A `GrowingLayer` keeps a buffer with spare room (doubling when full), writes new
entries into it and hands out views; cutting it back (rejected speculative tokens) only moves its
length. `keys`/`values` stay views of the filled part, so code that reads a DynamicLayer reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

MIN_ROOM = 64  # tokens a fresh buffer holds before its first growth


class GrowingLayer(DynamicLayer):
    """One block's keys and values, [batch, kv_heads, room, head_dim] buffers filled to `length`."""

    def __init__(self, room: int = 0) -> None:
        super().__init__()
        self.room_hint = room  # tokens to make room for at the first write (the session's budget)
        self.length = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        room = max(self.room_hint, key_states.shape[-2], MIN_ROOM)
        # zeros, not garbage: a static step reads the whole buffer, and a masked NaN still poisons it
        self._k = key_states.new_zeros(*key_states.shape[:-2], room, key_states.shape[-1])
        self._v = value_states.new_zeros(*value_states.shape[:-2], room, value_states.shape[-1])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._k.shape[-2]:
            self._grow(end)
        self._k[..., self.length:end, :].copy_(key_states)
        self._v[..., self.length:end, :].copy_(value_states)
        self._set_length(end)
        return self.keys, self.values

    def fill(self, rows: slice, offset: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Copy `keys`/`values` into rows `rows` at positions offset.. (a batch being assembled)."""
        end = offset + keys.shape[-2]
        self._k[rows, :, offset:end].copy_(keys)
        self._v[rows, :, offset:end].copy_(values)

    def allocate(self, like: torch.Tensor, batch: int, room: int, length: int) -> None:
        """Zeroed buffers of `batch` rows and `room` tokens, `length` of them counted as filled."""
        self.lazy_initialization(like, like)
        shape = (batch, like.shape[1], room, like.shape[3])
        self._k, self._v = like.new_zeros(shape), like.new_zeros(shape)
        self._set_length(length)

    def attach(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """Use `keys`/`values` (rows of a shared pool, core/kv_pool.py) as the buffers, `length`
        entries of them filled."""
        DynamicLayer.lazy_initialization(self, keys, values)
        self._k, self._v = keys, values
        self._set_length(length)

    def buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole key and value buffers, [batch, kv_heads, room, head_dim] (filled or not)."""
        return self._k, self._v

    def mark_filled(self, length: int) -> None:
        """Entries up to `length` were written into the buffers directly (a captured step)."""
        self._set_length(length)

    def crop_to(self, length: int) -> None:
        """Keep the first `length` entries (the rest stay in the buffer and are overwritten later)."""
        self._set_length(min(length, self.length))

    def _grow(self, needed: int) -> None:
        room = max(needed, 2 * self._k.shape[-2])
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = old.new_zeros(*old.shape[:-2], room, old.shape[-1])
            new[..., :self.length, :].copy_(old[..., :self.length, :])
            setattr(self, name, new)

    def _set_length(self, length: int) -> None:
        self.length = length
        self.keys = self._k[..., :length, :]
        self.values = self._v[..., :length, :]

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0 and self.is_initialized:
            self.crop_to(self.length + tokens_to_remove)


def growing_cache(config, room: int = 0) -> DynamicCache:
    """A DynamicCache for `config` whose full-attention layers grow in place (sliding-window layers,
    which drop old entries, stay transformers' own)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def gather_batch(batch: DynamicCache, slot: int, sessions: Sequence[Any], longest: int, tokens: int) -> None:
    """Fill the batch cache's `slot` with each session's entries, left-padded to `longest`.

    `sessions`: what core/span.py keeps per session (its `cache`, `length` and `batch_size`).

    A growing layer gets one buffer with room for the step's new tokens, so the pass appends in
    place; other layers (sliding windows) are concatenated as transformers keeps them."""
    layer = batch.layers[slot]
    if not isinstance(layer, GrowingLayer):
        keys, values = zip(*(_padded(s.cache, slot, longest - s.length, s, sessions) for s in sessions))
        batch.update(torch.cat(keys), torch.cat(values), slot)
        return
    ref = next(s.cache.layers[slot].keys for s in sessions if s.length)
    layer.allocate(ref, sum(s.batch_size for s in sessions), longest + tokens, longest)
    row = 0
    for s in sessions:
        if s.length:
            own = s.cache.layers[slot]
            layer.fill(slice(row, row + s.batch_size), longest - s.length, own.keys, own.values)
        row += s.batch_size


def _padded(cache: DynamicCache, slot: int, pad: int, session: Any,
            sessions: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """A session's keys and values of one cache slot with `pad` empty entries in front."""
    layer = cache.layers[slot]
    keys = getattr(layer, "keys", None)
    if keys is None or keys.numel() == 0:  # a session that has seen nothing yet: all padding
        ref = next(s.cache.layers[slot].keys for s in sessions if s.length)
        empty = ref.new_zeros(session.batch_size, ref.shape[1], pad, ref.shape[3])
        return empty, empty
    if not pad:
        return keys, layer.values
    zeros = keys.new_zeros(*keys.shape[:2], pad, keys.shape[3])
    return torch.cat([zeros, keys], dim=2), torch.cat([zeros, layer.values], dim=2)
