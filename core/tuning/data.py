"""Training data: JSON lines of {"prompt", "completion"} (loss on the completion) or {"text"}."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from corolla.core.errors import CorollaError

MAX_EXAMPLE_TOKENS = 1024


class DataError(CorollaError):
    """The training file cannot be used (the message names the file and line)."""


@dataclass(frozen=True)
class Example:
    """Token ids of one example; the loss covers ids[loss_from:] (each predicted from the ones before)."""

    ids: tuple[int, ...]
    loss_from: int


def load_examples(path: Path | str, tokenizer) -> list[Example]:
    """Read a JSON-lines file; each line is {"prompt": str, "completion": str} or {"text": str}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training data {path} does not exist")
    eos = getattr(tokenizer, "eos_token_id", None)
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
            prompt = list(tokenizer(row["prompt"]).input_ids)
            completion = list(tokenizer(row["completion"], add_special_tokens=False).input_ids)
            if isinstance(eos, int):
                completion.append(eos)  # so that the tuned model also learns where to stop
            ids, loss_from = prompt + completion, max(len(prompt), 1)
        elif isinstance(row, dict) and isinstance(row.get("text"), str):
            ids, loss_from = list(tokenizer(row["text"]).input_ids), 1
        else:
            raise DataError(f'{path}:{number}: each line must be {{"prompt": ..., "completion": ...}} '
                            'or {"text": ...} with string values')
        if len(ids) < 2 or loss_from >= len(ids):
            raise DataError(f"{path}:{number}: nothing to learn (no completion tokens)")
        if len(ids) > MAX_EXAMPLE_TOKENS:
            raise DataError(f"{path}:{number}: {len(ids)} tokens, over the limit of {MAX_EXAMPLE_TOKENS}")
        examples.append(Example(tuple(ids), loss_from))
    if not examples:
        raise DataError(f"{path} holds no examples")
    return examples


def make_batch(examples: list[Example], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [batch, longest], loss mask [batch, longest]); padding goes on the right, where a causal
    model never looks back at it, and is masked out of the loss."""
    longest = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(examples), longest, dtype=torch.bool)
    for row, e in enumerate(examples):
        ids[row, :len(e.ids)] = torch.tensor(e.ids)
        mask[row, e.loss_from:len(e.ids)] = True
    return ids, mask


def batches(examples: list[Example], batch_size: int, seed: int = 0):
    """Endless batches: shuffled passes over the examples."""
    if batch_size < 1:
        raise DataError(f"the batch size must be at least 1, got {batch_size}")
    rng = random.Random(seed)
    while True:
        order = list(examples)
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            yield order[i:i + batch_size]
