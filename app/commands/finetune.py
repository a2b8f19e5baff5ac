"""`corolla finetune`: train soft prompts (prompt or deep-prompt tuning) through the swarm.

The servers' weights never change: the prompts live here and are saved to a safetensors file that
records the model's hash (`corolla generate --tuned FILE` uses it). Each step prints
`step N loss X`; Ctrl-C saves the prompts of the last finished step.
"""

from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="tune soft prompts through the swarm (servers' weights never change)")
    p.add_argument("--model", default="default", help="'default', a model folder or a hub id")
    p.add_argument("--data", required=True, help='JSON lines: {"prompt": ..., "completion": ...} or {"text": ...}')
    p.add_argument("--method", choices=("prompt", "deep-prompt"), default="prompt",
                   help="prompt: soft prompt before the input; deep-prompt: also a prompt added at every block")
    p.add_argument("--prompt-length", type=int, default=8, help="soft prompt positions")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (0.1 suits soft prompts)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="where to save the tuned prompts (.safetensors)")
    p.add_argument("--init-text", default=None, help="start the soft prompt from this text's embeddings")
    where = p.add_argument_group("where the blocks run")
    where.add_argument("--initial-peers", nargs="*", default=None, help="multiaddrs of swarm peers to join")
    where.add_argument("--local", action="store_true", help="run every block in this process")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer

    from corolla.core.errors import CorollaError
    from corolla.core.head import ClientHead
    from corolla.core.model import ModelInfo, resolve_model
    from corolla.core.tuning.data import batches, load_examples
    from corolla.core.tuning.prompts import TunedPrompts
    from corolla.core.tuning.training import PromptTrainer

    if not args.local and args.initial_peers is None:
        raise CorollaError("say where the blocks run: --initial-peers MADDR to use a swarm, or --local")
    for name in ("steps", "batch_size", "prompt_length"):
        if getattr(args, name) < 1:
            raise CorollaError(f"--{name.replace('_', '-')} must be at least 1")
    if not args.lr > 0:
        raise CorollaError("--lr must be above 0")
    torch.manual_seed(args.seed)
    path = resolve_model(args.model)
    info = ModelInfo.load(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    head = ClientHead.load(path)
    examples = load_examples(args.data, tokenizer)
    prompts = TunedPrompts(args.prompt_length, info.hidden_size, info.num_blocks, args.method,
                           init=initial_prompt(head, tokenizer, args.prompt_length, args.init_text))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    optimizer = torch.optim.Adam(prompts.parameters(), lr=args.lr)
    say(f"tuning {args.method} ({args.prompt_length} positions) of {info.name} on {len(examples)} examples, "
        f"{args.steps} steps of batch {args.batch_size}")

    def train(blocks) -> int:
        trainer = PromptTrainer(head, prompts, blocks, optimizer, pad_id)
        kept = {k: v.detach().clone() for k, v in prompts.state_dict().items()}
        done, t0 = 0, time.perf_counter()
        data = batches(examples, args.batch_size, args.seed)
        try:
            for step in range(1, args.steps + 1):
                loss = trainer.step(next(data))
                kept = {k: v.detach().clone() for k, v in prompts.state_dict().items()}
                done = step
                clear_progress()
                print(f"step {step} loss {loss:.4f}", flush=True)
                progress(step, args.steps, time.perf_counter() - t0)
        except KeyboardInterrupt:
            prompts.load_state_dict(kept)
            prompts.save(args.out, info.name, info.hash)
            say(f"\ninterrupted after {done} steps; saved the prompts of step {done} to {args.out}")
            return 130
        prompts.save(args.out, info.name, info.hash)
        say(f"\nsaved {args.out} ({args.method}, {args.prompt_length} positions, model {info.name} {info.hash})")
        return 0

    if args.local:
        from corolla.core.span import Span
        from corolla.core.tuning.training import LocalBlocks

        return train(LocalBlocks([Span.load(path, 0, info.num_blocks)]))
    from corolla.app.swarm.training import TrainingSwarm
    from corolla.p2p.names import blocks_text, short_id

    def on_retry(event) -> None:
        say(f"\n[swarm] {blocks_text(event.start, event.end)} failed on {short_id(event.peer_id)} ({event.reason}); "
            "retrying on another server")

    with TrainingSwarm(args.initial_peers, info, on_retry=on_retry) as swarm:
        return train(swarm.module)


def initial_prompt(head, tokenizer, length: int, text: str | None):
    """Soft prompt start: the embeddings of `text` (repeated or cut to `length`), or of random
    common tokens: starting inside the embedding cloud trains faster than from noise."""
    import torch

    if text:
        ids = list(tokenizer(text, add_special_tokens=False).input_ids) or [0]
        ids = (ids * length)[:length]
    else:
        ids = torch.randint(0, min(5000, head.embed_weight.shape[0]), (length,)).tolist()
    return head.embed(torch.tensor([ids]))[0].clone()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def progress(step: int, steps: int, seconds: float) -> None:
    width = 24
    filled = width * step // steps
    bar = "#" * filled + "-" * (width - filled)
    print(f"\r[{bar}] {step}/{steps}  {seconds / step:.2f} s/step", end="", file=sys.stderr, flush=True)


def clear_progress() -> None:
    """On a terminal, wipe the progress line before a step line lands under it."""
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr, flush=True)
