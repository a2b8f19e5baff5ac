"""The client's share of the model: embeddings in, final norm and LM head out. No blocks."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig

from corolla.core.errors import CorollaError
from corolla.core.families import Family, family_for
from corolla.core.quantization import column_major
from corolla.core.weights import load_tensors


class ClientHead(nn.Module):
    """Token ids -> hidden states before block 0; hidden states after the last block -> logits."""

    def __init__(self, config, embed: torch.Tensor, norm: tuple[torch.Tensor, ...],
                 lm_head: torch.Tensor, embed_norm: tuple[torch.Tensor, ...] = (), family: Family | None = None):
        super().__init__()
        self.config = config
        self.embed_weight = nn.Parameter(embed, requires_grad=False)
        self.lm_head_weight = nn.Parameter(lm_head, requires_grad=False)
        self.norm_params = nn.ParameterList(nn.Parameter(t, requires_grad=False) for t in norm)
        self.embed_norm_params = nn.ParameterList(nn.Parameter(t, requires_grad=False) for t in embed_norm)
        self.family = family or family_for(config)  # how embeddings are scaled and logits finished
        self.eps = getattr(config, "rms_norm_eps", None) or getattr(config, "layer_norm_epsilon", 1e-5)

    @classmethod
    def load(cls, path: Path | str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> ClientHead:
        """The head of the model at `path` on `device` ("auto": a CUDA GPU when there is one).

        dtype None: bfloat16 on a GPU (the logits of sampled rows are still float32), float32 on a CPU.
        """
        path = Path(path)
        device = resolve_device(device)
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model_config = AutoConfig.from_pretrained(path)
        family = family_for(model_config)
        keys = family.head_keys
        config = family.decoder_config(model_config)
        wanted = [keys.embed, keys.lm_head, *keys.final_norm, *keys.embed_norm]
        t = load_tensors(path, wanted, dtype=dtype)
        if device.type == "cpu" and dtype == torch.float32:
            # Column-major (core/quantization.py): one row of logits about 1.7x faster; embedding
            # lookups read strided rows, which costs nothing noticeable.
            t = {k: column_major(v) if v.dim() == 2 else v for k, v in t.items()}
        embed = t[keys.embed]
        # Tied checkpoints store no LM head: it is the embedding matrix.
        lm_head = t.get(keys.lm_head, embed)
        head = cls(config, embed, tuple(t[k] for k in keys.final_norm), lm_head,
                   tuple(t[k] for k in keys.embed_norm), family)
        return head.to(device)

    @property
    def device(self) -> torch.device:
        return self.embed_weight.device

    @property
    def hidden_size(self) -> int:
        return self.embed_weight.shape[1]

    @torch.inference_mode()
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[batch, tokens] ids -> [batch, tokens, hidden] inputs of the first block."""
        hidden = F.embedding(input_ids.to(self.embed_weight.device), self.embed_weight)
        if self.embed_norm_params:
            weight, bias = self.embed_norm_params
            hidden = F.layer_norm(hidden, (self.hidden_size,), weight, bias, self.eps)
        return self.family.scale_embeddings(self.config, hidden)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, hidden] outputs of the last block -> [batch, tokens, vocab] float32 logits.

        Callers pass only the rows they sample. With half-precision weights (a GPU client) the LM
        head accumulates and returns float32: a bfloat16 result flips near-ties."""
        return self.norm_logits(hidden)

    def norm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`logits`, differentiable with respect to `hidden` (for fine-tuning; the head stays frozen)."""
        dtype = self.embed_weight.dtype
        x = self.family.final_norm(self.config, hidden.to(device=self.device, dtype=dtype), tuple(self.norm_params))
        if dtype == torch.float32:
            out = F.linear(x, self.lm_head_weight)
        elif self.device.type == "cuda":
            flat = x.reshape(-1, self.hidden_size)
            out = torch.mm(flat, self.lm_head_weight.t(), out_dtype=torch.float32).reshape(*x.shape[:-1], -1)
        else:  # CPU kernels have no half-in, float32-out product
            out = F.linear(x.float(), self.lm_head_weight.float())
        return self.family.finish_logits(self.config, out.float())


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> the first CUDA GPU if there is one, else the CPU; other names as torch reads them."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CorollaError(f"device {device} asked for, but this machine has no CUDA GPU that torch can use; "
                           "use --client-device cpu")
    return device
