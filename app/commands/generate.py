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
    # Unset sampling knobs come from the model's generation_config.json, else a conservative setting.
    p.add_argument("--temperature", type=float, default=None, help="0 is greedy (default: the model's own)")
    p.add_argument("--top-k", type=int, default=None, help="0 is off (default: the model's own)")
    p.add_argument("--top-p", type=float, default=None, help="1 is off (default: the model's own)")
    p.add_argument("--repetition-penalty", type=float, default=None, help="1 is off (default: the model's own)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop at this string (repeatable)")
    p.add_argument("--no-stream", action="store_true", help="print the completion only when it is finished")
    p.add_argument("--speculative", type=int, default=0, metavar="K",
                   help="guess up to K tokens per step from the context (prompt lookup) and check them in "
                        "one pass; the output is the same, in fewer round trips (0: off)")
    p.add_argument("--client-device", default="auto",
                   help="where the embeddings and LM head run: auto (a CUDA GPU if there is one), cpu, cuda")
    p.add_argument("--tuned", default=None, help="a tuned-prompts file from `corolla finetune` for this model")
    p.add_argument("--adapter", default=None, metavar="NAME",
                   help="a LoRA adapter the swarm's servers offer (`corolla swarm` lists them); only servers "
                        "offering it are used")
    where = p.add_argument_group("where the blocks run")
    where.add_argument("--local", action="store_true", help="run every block in this process")
    where.add_argument("--spans", default=None,
                       help="with --local: run as a chain of in-process spans, e.g. 0:10,10:20,20:30")
    where.add_argument("--quant", default="none", choices=["none", "int8", "nf4", "int4"],
                       help="with --local: quantize the blocks' weights as `corolla serve --quant` does "
                            "(int4: a CPU's fastest)")
    where.add_argument("--initial-peers", nargs="*", default=None, help="multiaddrs of swarm peers to join")
    where.add_argument("--verbose", action="store_true", help="show the route through the swarm")
    where.add_argument("--spot-check", type=float, default=None, metavar="RATE",
                       help="fraction of steps after which a second server checks the outputs since the "
                            "last check, to catch wrong activations (0: off, 1: every step; default 0.05; a "
                            "hop's first step is always checked, and its outputs at the latest every 16)")
    where.add_argument("--push", action=argparse.BooleanOptionalAction, default=True,
                       help="servers pass each step straight to the next server on the route (default); "
                            "--no-push: every step goes back through this machine between servers")
    where.add_argument("--swarm-key", type=Path, default=None, metavar="FILE",
                       help="join a private swarm: the key file its members share")
    p.set_defaults(func=run)


def sampling_of(args: argparse.Namespace, path):
    """The sampling flags over the model's own defaults, as core's SamplingParams (--greedy: temperature 0)."""
    from corolla.core.generation import model_sampling

    changes = {name: getattr(args, name) for name in ("temperature", "top_k", "top_p", "repetition_penalty")
               if getattr(args, name) is not None}
    if args.greedy:
        changes["temperature"] = 0.0
    return model_sampling(path).replace(max_new_tokens=args.max_new_tokens, seed=args.seed, stop=tuple(args.stop),
                                        **changes).validated()


def run(args: argparse.Namespace) -> int:
    from corolla.app.trio_run import run_trio
    from corolla.core.errors import CorollaError

    if args.spans and not args.local:
        raise CorollaError("--spans runs in-process spans: use it with --local")
    if args.quant != "none" and not args.local:
        raise CorollaError("--quant quantizes blocks run in this process: use it with --local (servers "
                           "choose their own with corolla serve --quant)")
    if args.adapter is not None and args.local:
        raise CorollaError("LoRA adapters are applied by the swarm's servers (corolla serve --adapter DIR): "
                           "use --adapter with --initial-peers, not --local")
    if not args.local and args.initial_peers is None:
        raise CorollaError("say where the blocks run: --local, or --initial-peers MADDR to use a swarm")
    stream = not args.no_stream
    reply = run_trio(_generate, args, stream)
    if stream:
        sys.stdout.write("\n")
    else:
        print(reply.text)
    return 0


async def _generate(args: argparse.Namespace, stream: bool):
    import trio

    from corolla.app.chat.reply import ReplyEvents, ReplyWriter
    from corolla.app.swarm.events import describe_event, describe_liar
    from corolla.core.errors import CorollaError
    from corolla.core.model import ModelInfo, resolve_model
    from corolla.p2p.pnet import read_swarm_key
    from corolla.p2p.spotcheck import DEFAULT_RATE

    rate = DEFAULT_RATE if args.spot_check is None else args.spot_check
    if not 0 <= rate <= 1:
        raise CorollaError(f"--spot-check must be from 0 (off) to 1 (every step), got {rate}")

    path = await trio.to_thread.run_sync(resolve_model, args.model)

    def out(text: str) -> None:
        if stream:
            sys.stdout.write(text)
            sys.stdout.flush()

    def err(text: str) -> None:
        print(f"[swarm] {text}", file=sys.stderr, flush=True)

    last_route: list = []

    def on_route(hops) -> None:
        last_route[:] = hops
        if args.verbose:
            err("route: " + " -> ".join(f"{h} ({h.server.rtt_ms:.1f} ms rtt, {h.server.block_ms:.2f} ms/block)"
                                        for h in hops))

    def on_reroute(event, hops) -> None:
        last_route[:] = hops
        err(describe_event(event))

    events = ReplyEvents(on_route=on_route, on_reroute=on_reroute,
                         on_wait=lambda event: err(describe_event(event)), on_text=out,
                         on_liar=lambda caught: err(describe_liar(caught)))
    messages: list[dict[str, str]] | str = args.prompt
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        messages.append({"role": "user", "content": args.prompt})
    async with trio.open_nursery() as nursery:
        tuned = Path(args.tuned) if args.tuned else None
        deep = None if tuned is None else _deep_prompts(tuned, path)  # None for a plain soft prompt
        if args.local:
            from corolla.app.swarm.local import LocalRouteFactory
            from corolla.core.chain import parse_spans

            num_blocks = ModelInfo.load(path).num_blocks
            routes = LocalRouteFactory(path, parse_spans(args.spans, num_blocks) if args.spans else [(0, num_blocks)],
                                       deep_prompts=deep, quant=args.quant)
        else:
            from corolla.app.swarm.connection import SwarmConnection
            from corolla.app.swarm.remote import SwarmRouteFactory

            key = read_swarm_key(args.swarm_key) if args.swarm_key else None
            routes = SwarmRouteFactory(SwarmConnection(args.initial_peers, lambda: path, lambda: nursery, key),
                                       spot_check=rate, push=args.push, adapter=args.adapter,
                                       deep_prompts=deep)
        writer = ReplyWriter(lambda: path, routes, head_device=args.client_device, speculative=args.speculative,
                             tuned=tuned)
        try:
            reply = await writer.write(messages, sampling_of(args, path), events)
            if args.verbose and last_route:
                err("final route: " + " -> ".join(str(h) for h in last_route))
            if args.verbose or args.speculative:
                err(f"{reply.tokens} tokens in {reply.rounds} round trips "
                    f"({reply.tokens / max(reply.rounds, 1):.2f} tokens per round trip)")
            return reply
        finally:
            await writer.aclose()
            nursery.cancel_scope.cancel()


def _deep_prompts(tuned: Path, path: Path):
    """The per-block prompts of a deep-prompt file made for this model, or None for a plain prompt."""
    from corolla.core.model import ModelInfo
    from corolla.core.tuning.prompts import TunedPrompts

    prompts = TunedPrompts.load(tuned, ModelInfo.load(path).hash)
    return None if prompts.deep is None else prompts.deep.detach()
