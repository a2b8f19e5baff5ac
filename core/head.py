"""The client's share of the model: embeddings in, final norm and LM head out. No blocks."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig

from corolla.core.families import family_for
from corolla.core.weights import load_tensors


class ClientHead(nn.Module):
    """Token ids -> hidden states before block 0; hidden states after the last block -> logits."""

    def __init__(self, config, embed: torch.Tensor, norm: tuple[torch.Tensor, ...],
                 lm_head: torch.Tensor, embed_norm: tuple[torch.Tensor, ...] = ()):
        super().__init__()
        self.config = config
        self.embed_weight = nn.Parameter(embed, requires_grad=False)
        self.lm_head_weight = nn.Parameter(lm_head, requires_grad=False)
        self.norm_params = nn.ParameterList(nn.Parameter(t, requires_grad=False) for t in norm)
        self.embed_norm_params = nn.ParameterList(nn.Parameter(t, requires_grad=False) for t in embed_norm)
        self.is_rms = config.model_type != "bloom"
        self.eps = getattr(config, "rms_norm_eps", None) or getattr(config, "layer_norm_epsilon", 1e-5)

    @classmethod
    def load(cls, path: Path | str, dtype: torch.dtype = torch.float32) -> ClientHead:
        path = Path(path)
        config = AutoConfig.from_pretrained(path)
        keys = family_for(config).head_keys
        wanted = [keys.embed, keys.lm_head, *keys.final_norm, *keys.embed_norm]
        t = load_tensors(path, wanted, dtype=dtype)
        embed = t[keys.embed]
        # Tied checkpoints store no LM head: it is the embedding matrix.
        lm_head = t.get(keys.lm_head, embed)
        return cls(config, embed, tuple(t[k] for k in keys.final_norm), lm_head,
                   tuple(t[k] for k in keys.embed_norm))

    @property
    def hidden_size(self) -> int:
        return self.embed_weight.shape[1]

    @torch.inference_mode()
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[batch, tokens] ids -> [batch, tokens, hidden] inputs of the first block."""
        hidden = F.embedding(input_ids, self.embed_weight)
        if self.embed_norm_params:
            weight, bias = self.embed_norm_params
            hidden = F.layer_norm(hidden, (self.hidden_size,), weight, bias, self.eps)
        return hidden

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, hidden] outputs of the last block -> [batch, tokens, vocab] float32 logits."""
        return self.norm_logits(hidden)

    def norm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`logits`, differentiable with respect to `hidden` (for fine-tuning; the head stays frozen)."""
        hidden = hidden.to(self.embed_weight.dtype)
        if self.is_rms:
            (weight,) = self.norm_params
            x = hidden.to(torch.float32)
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
            hidden = weight * x.to(hidden.dtype)
        else:
            weight, bias = self.norm_params
            hidden = F.layer_norm(hidden, (self.hidden_size,), weight, bias, self.eps)
        return F.linear(hidden, self.lm_head_weight).float()
