"""What a model family must tell Corolla to split it into spans of blocks."""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from transformers import PretrainedConfig

from corolla.core.weights import weight_map


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
def cache_keyword(fn: Callable) -> str:
    """The name under which `fn` (a layer's forward, a mask builder) takes the attention cache.

    transformers 5.24 calls it `cache`; 5.17 (the GPU machine's) calls it `past_key_values`.
    Asking the signature once per function lets one family run on both."""
    params = inspect.signature(fn).parameters
    for name in ("cache", "past_key_values", "layer_past"):  # BLOOM's block says layer_past
        if name in params:
            return name
    return "past_key_values"


def cache_kwargs(block: nn.Module, cache) -> dict:
    """The cache as the keyword argument this transformers version's `block` takes."""
    return {cache_keyword(type(block).forward): cache}


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


def call_with_cache(fn: Callable, cache, **kwargs):
    """`fn(**kwargs)` with the cache passed under the name `fn` takes it by."""
    kwargs[cache_keyword(fn)] = cache
    return fn(**kwargs)


def tensor_bytes(folder: Path, names: list[str], dtype: torch.dtype | None = None) -> int:
    """Bytes the named checkpoint tensors take in memory, read from the safetensors headers only.

    With `dtype`, floating-point tensors count at that dtype's size (what loading would cast to)."""
    mapping = weight_map(folder)
    by_shard: dict[str, list[str]] = {}
    for name in names:
        by_shard.setdefault(mapping[name], []).append(name)
    total = 0
    for shard, shard_names in by_shard.items():
        with safe_open(str(folder / shard), framework="pt") as f:
            for name in shard_names:
                part = f.get_slice(name)
                numel = 1
                for size in part.get_shape():
                    numel *= size
                stored = _SAFETENSORS_DTYPES.get(part.get_dtype(), torch.float32)
                target = dtype if dtype is not None and stored.is_floating_point else stored
                total += numel * torch.empty((), dtype=target).element_size()
    return total


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
                       "F8_E5M2": torch.float8_e5m2}


class Family:
    """One family of decoder-only models (Llama-like, BLOOM, ...): how blocks are built and run."""

    name: str = ""  # what `model info` prints
    model_types: tuple[str, ...] = ()
    attn_implementation = "sdpa"
    head_keys: HeadKeys

    def block_prefix(self, index: int) -> str:
        """Checkpoint key prefix of block `index` (global index), ending with a dot."""
        raise NotImplementedError

    def build_block(self, config: PretrainedConfig, local_index: int) -> nn.Module:
        """An empty decoder block (built on whatever device is current, usually meta)."""
        raise NotImplementedError

    def block_state(self, config: PretrainedConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A block's checkpoint tensors (names without the block prefix) as its module expects them."""
        return state

    def decoder_config(self, config: PretrainedConfig) -> PretrainedConfig:
        """The config of the decoder stack: the model's own, or its text part for image-text models."""
        return config

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

    def block_bytes(self, folder: Path, index: int, dtype: torch.dtype | None = None) -> int:
        """Weight bytes of block `index` (all its experts, for mixture-of-experts), at `dtype` if given."""
        prefix = self.block_prefix(index)
        return tensor_bytes(folder, [n for n in weight_map(folder) if n.startswith(prefix)], dtype)

    # The client head's share: the family says how embeddings are scaled and logits are finished.

    def scale_embeddings(self, config: PretrainedConfig, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def final_norm(self, config: PretrainedConfig, hidden: torch.Tensor,
                   params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The norm after the last block: LayerNorm when the checkpoint has a bias, else RMSNorm."""
        eps = getattr(config, "rms_norm_eps", None) or getattr(config, "layer_norm_epsilon", 1e-5)
        if len(params) == 2:
            weight, bias = params
            return F.layer_norm(hidden, (hidden.shape[-1],), weight, bias, eps)
        (weight,) = params
        x = hidden.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return weight * x.to(hidden.dtype)

    def finish_logits(self, config: PretrainedConfig, logits: torch.Tensor) -> torch.Tensor:
        return logits
