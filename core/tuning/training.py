"""One training step of prompt tuning, wherever the blocks run (spans here, or a swarm route).

The blocks are any callable `blocks(hidden, deep) -> hidden` that autograd can go through: a
`LocalBlocks` of in-process spans, or p2p's `RemoteBlocks` route of servers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from corolla.core.head import ClientHead
from corolla.core.span import Span
from corolla.core.tuning.data import Example, make_batch
from corolla.core.tuning.prompts import TunedPrompts
from corolla.core.tuning.span_grad import run_span

Blocks = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


class LocalBlocks(nn.Module):
    """Spans in this process as one differentiable module (the in-process baseline and reference)."""

    def __init__(self, spans: list[Span]) -> None:
        super().__init__()
        self.spans = nn.ModuleList(spans)

    def forward(self, hidden: torch.Tensor, deep: torch.Tensor | None = None) -> torch.Tensor:
        x = hidden
        for span in self.spans:
            prompts = None if deep is None else deep[span.start:span.end]
            x = run_span(span, x.to(span.dtype), None if prompts is None else prompts.to(span.dtype))
        return x.to(hidden.dtype)


def embed(head: ClientHead, ids: torch.Tensor) -> torch.Tensor:
    """Token embeddings as an ordinary tensor (the head embeds in inference mode)."""
    return head.embed(ids).clone()


def completion_loss(head: ClientHead, prompts: TunedPrompts | None, blocks: Blocks, examples: list[Example],
                    pad_id: int = 0) -> torch.Tensor:
    """Mean cross-entropy (nats per token) of the examples' loss tokens, given the tuned prompts
    (None: the model as it is)."""
    ids, mask = make_batch(examples, pad_id)
    if prompts is None:
        length, out = 0, blocks(embed(head, ids), None)
    else:
        length, out = prompts.length, blocks(prompts.prepend(embed(head, ids)), prompts.deep)
    # The output at prompt position `length + t - 1` predicts token t.
    predicting = out[:, length:length + ids.shape[1] - 1]
    wanted = mask[:, 1:]
    logits = head.norm_logits(predicting[wanted].unsqueeze(0))[0]
    return F.cross_entropy(logits, ids[:, 1:][wanted])


class PromptTrainer:
    """Trains `prompts` with a standard torch optimizer; the model's weights stay frozen."""

    def __init__(self, head: ClientHead, prompts: TunedPrompts, blocks: Blocks, optimizer: torch.optim.Optimizer,
                 pad_id: int = 0) -> None:
        self.head, self.prompts, self.blocks, self.optimizer = head, prompts, blocks, optimizer
        self.pad_id = pad_id

    def step(self, examples: list[Example]) -> float:
        """One optimizer step on a batch; returns the batch's loss before the step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = completion_loss(self.head, self.prompts, self.blocks, examples, self.pad_id)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, examples: list[Example]) -> float:
        return float(completion_loss(self.head, self.prompts, self.blocks, examples, self.pad_id))
