"""A span's blocks with gradients: what a server recomputes to answer a backward request.

Deep prompts (per-block prompts, P-tuning v2 style) are added to the first P positions of the
hidden states before each block. Gradients flow to the inputs and the prompts only; the span's
weights have requires_grad False and never change.
"""

from __future__ import annotations

import torch

from corolla.core.errors import CorollaError, ShapeError
from corolla.core.span import Span

MAX_TRAIN_TOKENS = 8192  # batch x tokens recomputed at once: bounds a backward's activation memory


class TooManyTokensError(CorollaError):
    """A forward/backward request holds more tokens than the server recomputes at once."""


def check_request(span: Span, hidden: torch.Tensor, prompts: torch.Tensor | None,
                  max_tokens: int = MAX_TRAIN_TOKENS) -> None:
    """Raise ShapeError/DtypeError/TooManyTokensError unless the request fits this span."""
    span.check_hidden(hidden)
    tokens = hidden.shape[0] * hidden.shape[1]
    if tokens > max_tokens:
        raise TooManyTokensError(f"{tokens} tokens (batch x length) is over this server's limit of {max_tokens} "
                                 "for training requests; send smaller batches")
    if prompts is None:
        return
    if prompts.dtype != hidden.dtype:
        raise ShapeError(f"deep prompts must have the hidden states' dtype {hidden.dtype}, got {prompts.dtype}")
    if (prompts.dim() != 3 or prompts.shape[0] != span.num_blocks or prompts.shape[2] != span.hidden_size
            or not 1 <= prompts.shape[1] <= hidden.shape[1]):
        raise ShapeError(f"deep prompts must be [{span.num_blocks} blocks, length <= {hidden.shape[1]}, "
                         f"{span.hidden_size}], got {list(prompts.shape)}")


def run_span(span: Span, hidden: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
    """Hidden states [batch, tokens, hidden] through the span, adding prompts[i] [P, hidden] to the
    first P positions before block i. Differentiable; runs in the span's dtype and device."""
    family, config = span.family, span.config
    if prompts is None:
        return family.run_blocks(span.blocks, span.positional, config, hidden, None, 0)
    length = prompts.shape[1]
    x = hidden
    for i in range(span.num_blocks):
        x = torch.cat([x[:, :length] + prompts[i], x[:, length:]], dim=1)
        x = family.run_blocks(span.blocks[i:i + 1], span.positional, config, x, None, 0)
    return x


def span_forward(span: Span, hidden: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
    """The span's output for a training forward (no graph kept), in the dtype the inputs came in."""
    check_request(span, hidden, prompts)
    with torch.no_grad():
        out = run_span(span, hidden.to(span.device, span.dtype),
                       None if prompts is None else prompts.to(span.device, span.dtype))
    return out.to(device=hidden.device, dtype=hidden.dtype)


def span_backward(span: Span, hidden: torch.Tensor, grad_output: torch.Tensor,
                  prompts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Recompute the forward with a graph and return (grad of hidden, grad of prompts or None), each
    in the dtype it came in. Nothing is kept after the call."""
    check_request(span, hidden, prompts)
    if grad_output.shape != hidden.shape:
        raise ShapeError(f"output gradient has shape {list(grad_output.shape)}, inputs {list(hidden.shape)}")
    with torch.inference_mode(False), torch.enable_grad():
        x = hidden.to(span.device, span.dtype).detach().requires_grad_(True)
        leaves = [x]
        p = None
        if prompts is not None:
            p = prompts.to(span.device, span.dtype).detach().requires_grad_(True)
            leaves.append(p)
        out = run_span(span, x, p)
        grads = torch.autograd.grad(out, leaves, grad_outputs=grad_output.to(out.device, out.dtype))
    grad_hidden = grads[0].to(device=hidden.device, dtype=hidden.dtype)
    grad_prompts = None if prompts is None else grads[1].to(device=prompts.device, dtype=prompts.dtype)
    return grad_hidden, grad_prompts
