"""Trainable prompts and their file: the only thing prompt tuning changes.

`input` [P, hidden] is prepended to the token embeddings (prompt tuning). With deep prompts,
`deep` [num_blocks, P, hidden] is added to the first P positions before every block as well. The
file is safetensors with the model's hash in its metadata, so it is refused for another model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from corolla.core.errors import CorollaError

FORMAT = "corolla-tuned-prompts"
VERSION = "1"
METHODS = ("prompt", "deep-prompt")


class TunedFileError(CorollaError):
    """A tuned-prompts file is unreadable, malformed, or belongs to another model."""


class TunedPrompts(nn.Module):
    """Soft prompts of `length` positions for a model with `num_blocks` blocks of width `hidden`."""

    def __init__(self, length: int, hidden: int, num_blocks: int, method: str = "prompt",
                 init: torch.Tensor | None = None) -> None:
        super().__init__()
        if method not in METHODS:
            raise CorollaError(f"unknown tuning method {method!r}; use one of {', '.join(METHODS)}")
        if length < 1:
            raise CorollaError(f"the prompt length must be at least 1, got {length}")
        self.method, self.length, self.hidden, self.num_blocks = method, length, hidden, num_blocks
        start = init.detach().clone().float() if init is not None else torch.randn(length, hidden) * 0.02
        if start.shape != (length, hidden):
            raise CorollaError(f"initial prompt has shape {list(start.shape)}, expected [{length}, {hidden}]")
        self.input = nn.Parameter(start)
        # Deep prompts start at zero: the first steps train from the plain prompt-tuned model.
        self.deep = nn.Parameter(torch.zeros(num_blocks, length, hidden)) if method == "deep-prompt" else None

    def prepend(self, embeds: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, hidden] embeddings -> [batch, length + tokens, hidden]."""
        prefix = self.input.to(embeds.dtype).unsqueeze(0).expand(embeds.shape[0], -1, -1)
        return torch.cat([prefix, embeds], dim=1)

    def save(self, path: Path | str, model_name: str, model_hash: str) -> None:
        tensors = {"input": self.input.detach().contiguous()}
        if self.deep is not None:
            tensors["deep"] = self.deep.detach().contiguous()
        metadata = {"format": FORMAT, "version": VERSION, "method": self.method, "model_name": model_name,
                    "model_hash": model_hash, "length": str(self.length), "num_blocks": str(self.num_blocks)}
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)  # a Ctrl-C while writing never leaves half a file under the real name

    @classmethod
    def load(cls, path: Path | str, model_hash: str | None = None) -> TunedPrompts:
        """Read a tuned-prompts file; TunedFileError if it is not one or `model_hash` differs."""
        path = Path(path)
        if not path.is_file():
            raise TunedFileError(f"{path} does not exist; train one with `corolla finetune ... --out {path}`")
        try:
            tensors = load_file(str(path))

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError) as exc:
            raise TunedFileError(f"{path} is not a safetensors file: {exc}") from None
        if meta.get("format") != FORMAT or "input" not in tensors:
            raise TunedFileError(f"{path} is not a Corolla tuned-prompts file")
        if model_hash is not None and meta.get("model_hash") != model_hash:
            raise TunedFileError(
                f"{path} was tuned for model {meta.get('model_name')!r} (hash {meta.get('model_hash')}), not this "
                f"model (hash {model_hash}); use it with the model it was trained on")
        method = meta.get("method", "prompt")
        inp = tensors["input"]
        if inp.dim() != 2:
            raise TunedFileError(f"{path}: the input prompt must be [length, hidden], got {list(inp.shape)}")
        deep = tensors.get("deep")
        num_blocks = int(deep.shape[0]) if deep is not None else int(meta.get("num_blocks", 0))
        if method == "deep-prompt" and (deep is None or deep.shape[1:] != inp.shape):
            raise TunedFileError(f"{path}: deep prompts missing or of the wrong shape")
        prompts = cls(inp.shape[0], inp.shape[1], num_blocks, method, init=inp)
        if prompts.deep is not None:
            prompts.deep.data.copy_(deep)
        prompts.model_name = meta.get("model_name", "")
        return prompts
