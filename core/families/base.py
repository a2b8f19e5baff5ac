"""What a model family must tell Corolla to split it into spans of blocks."""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig


@dataclass(frozen=True)
class HeadKeys:
    """Names of the client-side tensors in a checkpoint (embeddings, final norm, LM head)."""

    embed: str
    final_norm: tuple[str, ...]  # weight (and bias) of the final norm
    lm_head: str
    embed_norm: tuple[str, ...] = ()  # BLOOM normalizes embeddings before the first block


def layer_index(block: nn.Module) -> int:
    """The cache slot a block writes to (its `layer_idx`, local to the span it was built for)."""
    for module in block.modules():
        index = getattr(module, "layer_idx", None)
        if isinstance(index, int):
            return index
    return 0


@functools.cache
def _cache_keyword(block_type: type) -> str:
    params = inspect.signature(block_type.forward).parameters
    # transformers 5.24 names it `cache`, 5.17 `past_key_values`; BLOOM's block says `layer_past`.
    for name in ("cache", "past_key_values", "layer_past"):
        if name in params:
            return name
    raise TypeError(f"{block_type.__name__}.forward takes no cache argument this version of Corolla knows")


def cache_kwargs(block: nn.Module, cache) -> dict:
    """The cache as the keyword argument this transformers version's `block` takes (checked once per class)."""
    return {_cache_keyword(type(block)): cache}


def step_positions(past_length: int | Sequence[int], tokens: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Position ids [rows or 1, tokens] of a step's new tokens, and its padding mask [rows, kv] or None.

    A sequence `past_length` (one entry per row) is a batch of sessions with different pasts whose
    caches are left-padded to the longest: the mask hides the padding, positions stay each row's own.
    """
    if isinstance(past_length, int):
        return torch.arange(past_length, past_length + tokens, device=device).unsqueeze(0), None
    longest = max(past_length)
    past = torch.tensor(list(past_length), device=device)
    position_ids = past[:, None] + torch.arange(tokens, device=device)
    mask = torch.arange(longest + tokens, device=device)[None, :] >= (longest - past)[:, None]
    return position_ids, mask.long()


class Family:
    """One family of decoder-only models (Llama-like, BLOOM, ...): how blocks are built and run."""

    model_types: tuple[str, ...] = ()
    attn_implementation = "sdpa"
    head_keys: HeadKeys

    def block_prefix(self, index: int) -> str:
        """Checkpoint key prefix of block `index` (global index), ending with a dot."""
        raise NotImplementedError

    def build_block(self, config: PretrainedConfig, local_index: int) -> nn.Module:
        """An empty decoder block (built on whatever device is current, usually meta)."""
        raise NotImplementedError

    def span_config(self, config: PretrainedConfig, start: int, end: int) -> PretrainedConfig:
        """The config seen by blocks [start, end): they are indexed 0..n-1 inside a span's cache."""
        cfg = copy.deepcopy(config)
        cfg.num_hidden_layers = end - start
        layer_types = getattr(cfg, "layer_types", None)
        if layer_types:
            cfg.layer_types = list(layer_types[start:end])
        # A config whose attention implementation is unset silently drops the causal mask.
        cfg._attn_implementation = self.attn_implementation
        return cfg

    def make_positional(self, config: PretrainedConfig) -> nn.Module | None:
        """Weightless positional module shared by the span's blocks (rotary), or None."""
        return None

    def run_blocks(
        self,
        blocks: nn.ModuleList,
        positional: nn.Module | None,
        config: PretrainedConfig,
        hidden: torch.Tensor,
        cache,
        past_length: int | Sequence[int],
    ) -> torch.Tensor:
        """Run `hidden` [batch, tokens, hidden] through the blocks, appending to `cache` if given.

        `past_length` is the tokens already in the cache, or one count per row for a padded batch of
        sessions (see `step_positions`)."""
        raise NotImplementedError

    def kv_bytes_per_token(self, config: PretrainedConfig, num_blocks: int, dtype: torch.dtype) -> int:
        """Attention-cache bytes one token of one sequence takes in `num_blocks` blocks."""
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return num_blocks * 2 * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
