"""`corolla generate`: complete a prompt, locally (optionally as a chain of spans) or through a swarm."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="complete a prompt with a model (local or through the swarm)")
    p.add_argument("--model", default="default", help="'default', a model folder or a hub id")
    p.add_argument("--prompt", required=True, help="text to complete (or the user message with --chat)")
    p.add_argument("--chat", action="store_true", help="apply the model's chat template to the prompt")
    p.add_argument("--system", default=None, help="system prompt (with --chat)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop at this string (repeatable)")
    p.add_argument("--no-stream", action="store_true", help="print the completion only when it is finished")
    where = p.add_argument_group("where the blocks run")
    where.add_argument("--local", action="store_true", help="run every block in this process")
    where.add_argument("--spans", default=None,
                       help="with --local: run as a chain of in-process spans, e.g. 0:10,10:20,20:30")
    where.add_argument("--initial-peers", nargs="*", default=None, help="multiaddrs of swarm peers to join")
    where.add_argument("--verbose", action="store_true", help="show the route through the swarm")
    where.add_argument("--spot-check", type=float, default=None, metavar="RATE",
                       help="fraction of steps recomputed by a second server to catch wrong activations "
                            "(0: off, 1: every step; default 0.05; a hop's first step is always checked)")
    where.add_argument("--swarm-key", type=Path, default=None, metavar="FILE",
                       help="join a private swarm: the key file its members share")
    p.set_defaults(func=run)


def build_decoder(args: argparse.Namespace, path, on_text):
    """The tokenizer, client head and decoder for this command's prompt and sampling flags."""
    from transformers import AutoTokenizer

    from corolla.core.generation import Decoder, SamplingParams, chat_prompt_ids
    from corolla.core.head import ClientHead

    tokenizer = AutoTokenizer.from_pretrained(path)
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        messages.append({"role": "user", "content": args.prompt})
        prompt_ids = chat_prompt_ids(tokenizer, messages)
    else:
        prompt_ids = tokenizer(args.prompt).input_ids
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, greedy=args.greedy, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
        seed=args.seed, stop=list(args.stop),
    )
    return Decoder(ClientHead.load(path), tokenizer, params, prompt_ids, on_text=on_text)


def run(args: argparse.Namespace) -> int:
    from corolla.core.errors import CorollaError
    from corolla.core.model import resolve_model

    if args.spans and not args.local:
        raise CorollaError("--spans runs in-process spans: use it with --local")
    if not args.local and args.initial_peers is None:
        raise CorollaError("say where the blocks run: --local, or --initial-peers MADDR to use a swarm")
    path = resolve_model(args.model)
    stream = not args.no_stream

    def on_text(delta: str) -> None:
        if stream:
            sys.stdout.write(delta)
            sys.stdout.flush()

    decoder = build_decoder(args, path, on_text)
    if args.local:
        text = _run_local(args, path, decoder)
    else:
        text = _run_swarm(args, path, decoder)
    if stream:
        sys.stdout.write("\n")
    else:
        print(text)
    return 0


def _run_local(args: argparse.Namespace, path, decoder) -> str:
    from corolla.core.chain import LocalChain, parse_spans
    from corolla.core.generation import generate
    from corolla.core.model import ModelInfo

    num_blocks = ModelInfo.load(path).num_blocks
    spans = parse_spans(args.spans, num_blocks) if args.spans else [(0, num_blocks)]
    with LocalChain.load(path, spans, max_cache_tokens=decoder.max_length) as chain:
        chain.open(decoder.max_length)
        return generate(decoder, chain.forward)


def _run_swarm(args: argparse.Namespace, path, decoder) -> str:
    from corolla.app.swarm.generate import run_swarm_generation
    from corolla.core.errors import CorollaError
    from corolla.p2p.pnet import read_swarm_key
    from corolla.p2p.spotcheck import DEFAULT_RATE

    rate = DEFAULT_RATE if args.spot_check is None else args.spot_check
    if not 0.0 <= rate <= 1.0:
        raise CorollaError(f"--spot-check must be from 0 (off) to 1 (every step), got {rate}")
    key = read_swarm_key(args.swarm_key) if args.swarm_key else None
    return run_swarm_generation(path, decoder, args.initial_peers, verbose=args.verbose, spot_check=rate,
                                swarm_key=key)
