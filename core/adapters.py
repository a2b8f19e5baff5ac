"""LoRA adapters in PEFT's format on a span's blocks, chosen per session by name.

An adapter adds `scale * B(A(x))` to the output of each linear layer it targets. The base weights
stay as loaded and the delta is added per row of a pass, so sessions with different adapters (or
none) share one batched forward pass and a row without an adapter computes exactly what it would
on a server that has no adapters at all.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from corolla.core.errors import CorollaError, ShapeError

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PEFT_PREFIX = "base_model.model."  # what PEFT puts before the model's own module names
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
_SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B"}
# PEFT options that change what an adapter computes beyond B(A(x)): refused rather than ignored.
_UNSUPPORTED = {"use_dora": "DoRA", "fan_in_fan_out": "fan_in_fan_out (GPT-2 style Conv1D layers)",
                "lora_bias": "a LoRA bias", "modules_to_save": "fully trained modules (modules_to_save)",
                "trainable_token_indices": "trained token embeddings", "target_parameters": "target_parameters",
                "layer_replication": "layer replication"}


class AdapterError(CorollaError):
    """An adapter folder cannot be served: not PEFT LoRA, an unsupported option, or another model's."""


class UnknownAdapterError(CorollaError):
    """A session asked for an adapter this server does not serve."""


@dataclass(frozen=True)
class AdapterConfig:
    """What of adapter_config.json decides the scale: scale = alpha / r (alpha / sqrt(r) with rsLoRA)."""

    alpha: float
    rslora: bool = False
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> AdapterConfig:
        """Parse and check `folder`/adapter_config.json (AdapterError in plain words otherwise)."""
        try:
            raw = json.loads((folder / CONFIG_FILE).read_text())
        except FileNotFoundError:
            raise AdapterError(f"{folder} has no {CONFIG_FILE}: not a PEFT adapter folder") from None
        except (OSError, ValueError) as exc:
            raise AdapterError(f"{folder / CONFIG_FILE} cannot be read: {exc}") from None
        if not isinstance(raw, dict) or raw.get("peft_type", "LORA") != "LORA":
            raise AdapterError(f"{folder} is not a LoRA adapter (peft_type {raw.get('peft_type')!r})")
        for key, what in _UNSUPPORTED.items():
            if raw.get(key):
                raise AdapterError(f"{folder}: adapters with {what} are not supported")
        if raw.get("bias", "none") != "none":
            raise AdapterError(f"{folder}: adapters that train biases (bias={raw['bias']!r}) are not supported")
        alpha = raw.get("lora_alpha", 8)
        pattern = raw.get("alpha_pattern") or {}
        numbers = [alpha, *pattern.values()] if isinstance(pattern, dict) else []
        if not numbers or not all(isinstance(v, int | float) and math.isfinite(v) for v in numbers):
            raise AdapterError(f"{folder}: lora_alpha and alpha_pattern must be numbers")
        return cls(float(alpha), bool(raw.get("use_rslora", False)), {str(k): float(v) for k, v in pattern.items()})

    def scale(self, module: str, rank: int) -> float:
        """The factor on B(A(x)) for `module` (its name in the model) with rank `rank`."""
        alpha = self.alpha
        for pattern, value in self.alpha_pattern.items():  # as PEFT matches its patterns: a name's tail
            if re.match(rf"(.*\.)?({pattern})$", module):
                alpha = value
                break
        return alpha / math.sqrt(rank) if self.rslora else alpha / rank


class AdapterSet:
    """The names of the adapters loaded on a span, and which one each row of the running pass uses.

    The rows are kept per thread: a pass runs in one thread, and a stateless request running in
    another thread meanwhile sees no adapter."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._local = threading.local()

    @contextmanager
    def use(self, rows: Sequence[str | None]) -> Iterator[None]:
        """Within the block, row i of every pass through the span uses adapter rows[i] (None: none)."""
        if not any(rows):
            yield
            return
        self._local.rows = list(rows)
        try:
            yield
        finally:
            self._local.rows = None

    def rows(self) -> list[str | None] | None:
        return getattr(self._local, "rows", None)

    def check(self, name: str | None) -> None:
        """Raise UnknownAdapterError unless `name` is None or served here."""
        if name is not None and name not in self.names:
            offered = ", ".join(self.names) or "none"
            raise UnknownAdapterError(f"this server has no adapter {str(name)[:64]!r} (it serves: {offered})")


class LoraLinear(nn.Module):
    """A linear layer plus the LoRA deltas of the adapters that target it, applied per row."""

    def __init__(self, base: nn.Module, adapters: AdapterSet) -> None:
        super().__init__()
        self.base = base
        self.adapters = adapters
        self.loras: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}  # name -> A, B, scale

    @property
    def weight(self) -> torch.Tensor:  # transformers' code reads a projection's weight (its dtype)
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        rows = self.adapters.rows()
        if rows is None:
            return out
        if len(rows) != x.shape[0]:
            raise ShapeError(f"{len(rows)} adapter rows for a batch of {x.shape[0]}")
        for name in dict.fromkeys(r for r in rows if r is not None):
            lora = self.loras.get(name)
            if lora is None:  # this adapter leaves this layer alone
                continue
            a, b, scale = lora
            picked = [i for i, r in enumerate(rows) if r == name]
            if len(picked) == len(rows):
                out = out + (F.linear(F.linear(x.to(a.dtype), a), b) * scale).to(out.dtype)
            else:
                index = torch.tensor(picked, device=x.device)
                delta = F.linear(F.linear(x.index_select(0, index).to(a.dtype), a), b) * scale
                out = out.index_add(0, index, delta.to(out.dtype))
        return out


def adapter_name(folder: Path) -> str:
    """The name an adapter folder is served under: the folder's name (checked)."""
    name = Path(folder).resolve().name
    check_name(name)
    return name


def check_name(name: str) -> None:
    if not ADAPTER_NAME.match(name):
        raise AdapterError(f"adapter name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                           "(starting with a letter or digit)")


def block_pattern(span: nn.Module) -> re.Pattern[str]:
    """Matches a checkpoint name inside a block of the span's model: group 1 the block, 2 the rest."""
    prefix = span.family.block_prefix(0)
    head = re.escape(prefix[: prefix.rindex("0.")])
    return re.compile(rf"^{head}(\d+)\.(.+)$")


def load_adapter(span: nn.Module, folder: Path | str, name: str | None = None) -> str:
    """Attach the LoRA adapter in `folder` to `span`, reading only its blocks' tensors; its name."""
    folder = Path(folder)
    name = name or adapter_name(folder)
    check_name(name)
    if name in span.adapters.names:
        raise AdapterError(f"two adapters are named {name!r}; rename one of the folders")
    config = AdapterConfig.read(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise AdapterError(f"{folder} has no {WEIGHTS_FILE} (only safetensors adapters are served)")
    pairs = _span_tensors(span, folder / WEIGHTS_FILE)
    blocks = list(span.blocks)
    for (block, module, inner), parts in pairs.items():
        if set(parts) != {"A", "B"}:
            raise AdapterError(f"{folder}: {module} has lora_{next(iter(parts))} without its pair")
        a, b = parts["A"], parts["B"]
        target = _linear_of(blocks[block - span.start], inner, folder)
        base = target.base if isinstance(target, LoraLinear) else target
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1] or a.shape[1] != base.in_features \
                or b.shape[0] != base.out_features:
            raise AdapterError(f"{folder}: {module} has LoRA shapes {list(a.shape)} and {list(b.shape)}, which do "
                               f"not fit a {base.in_features}->{base.out_features} layer: made for another model?")
        if not isinstance(target, LoraLinear):
            target = _wrap(blocks[block - span.start], inner, target, span.adapters)
        dtype, device = span.dtype, span.device
        target.loras[name] = (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype),
                              config.scale(module, a.shape[0]))
    span.adapters.names.append(name)
    return name


def _span_tensors(span: nn.Module, weights: Path) -> dict[tuple[int, str, str], dict[str, torch.Tensor]]:
    """The adapter's A and B tensors of the span's blocks, by (global block, module name in the model,
    module name inside the block).

    Every tensor must belong to some block: a LoRA on the embeddings or the LM head would change what
    the client computes, which a server cannot do."""
    pattern = block_pattern(span)
    found: dict[tuple[int, str, str], dict[str, torch.Tensor]] = {}
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                full = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
                suffix = next((s for s in _SUFFIXES if full.endswith(s)), None)
                match = pattern.match(full)
                if suffix is None or match is None:
                    raise AdapterError(f"{weights.parent}: tensor {key!r} is not a LoRA weight of this model's "
                                       "blocks: an adapter of another model, or of the embeddings or LM head "
                                       "(which run on the client, so servers cannot apply them)")
                block = int(match.group(1))
                if span.start <= block < span.end:
                    module, inner = full[: -len(suffix)], match.group(2)[: -len(suffix)]
                    found.setdefault((block, module, inner), {})[_SUFFIXES[suffix]] = f.get_tensor(key)
    except AdapterError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise AdapterError(f"{weights} cannot be read: {exc}") from None
    return found


def _linear_of(block: nn.Module, path: str, folder: Path) -> nn.Module:
    """The linear layer at `path` inside `block`."""
    try:
        target = block.get_submodule(path)
    except AttributeError:
        raise AdapterError(f"{folder}: this model's blocks have no layer {path!r}: "
                           "the adapter was made for another model") from None
    if isinstance(target, LoraLinear) or (hasattr(target, "in_features") and hasattr(target, "out_features")):
        return target
    raise AdapterError(f"{folder}: {path!r} is not a linear layer; only linear layers take LoRA here")


def _wrap(block: nn.Module, path: str, linear: nn.Module, adapters: AdapterSet) -> LoraLinear:
    parent_path, _, attr = path.rpartition(".")
    parent = block.get_submodule(parent_path) if parent_path else block
    wrapped = LoraLinear(linear, adapters)
    setattr(parent, attr, wrapped)
    return wrapped
