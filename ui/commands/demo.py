"""`corolla demo`: a local swarm (a bootstrap peer and three servers) and the app connected to it."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="start a local swarm on the default model and open the app on it")
    p.add_argument("--headless", action="store_true", help="chat in the terminal instead of the app")
    p.add_argument("--model", default="default", help="'default', a model folder or a hub id")
    p.add_argument("--spans", default="0:10,10:20,20:30", help="one server per span, e.g. 0:15,15:30")
    p.add_argument("--max-new-tokens", type=int, default=128, help="with --headless: reply length limit")
    from corolla.ui.commands.app import add_gui_arguments

    add_gui_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import trio

    from corolla.app.demo.swarm import DemoSwarm
    from corolla.core.chain import parse_spans
    from corolla.core.generation import CHAT_SAMPLING
    from corolla.core.model import ModelInfo, resolve_model

    path = resolve_model(args.model)
    spans = tuple(parse_spans(args.spans, ModelInfo.load(path).num_blocks))
    with DemoSwarm(args.model, spans) as swarm:
        print("local swarm is up; join it from another machine's app with --initial-peers "
              + swarm.initial_peers[0], flush=True)
        if args.headless:
            from corolla.app.chat.terminal import terminal_chat

            sampling = CHAT_SAMPLING.replace(max_new_tokens=args.max_new_tokens).validated()
            return trio.run(terminal_chat, swarm.initial_peers, path, sampling, "You are a helpful assistant.")
        from corolla.ui.commands.app import start_gui

        args.open_chat = True
        return start_gui(args, initial_peers=swarm.initial_peers)
