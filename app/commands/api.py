"""`corolla api`: an OpenAI-compatible HTTP API on this computer, answered by the swarm."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("api", help="serve an OpenAI-compatible API (chat and text completions) on the swarm")
    p.add_argument("--model", default="default", help="'default', a model folder or a hub id")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--initial-peers", nargs="+", help="multiaddrs of swarm peers to join")
    where.add_argument("--local", metavar="SPANS", help="run the blocks in this process instead, e.g. 0:30")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: this computer only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every request")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from corolla.app.trio_run import run_trio

    return run_trio(serve_api, args)


async def serve_api(args: argparse.Namespace) -> int:
    import trio

    from corolla.app.api.server import ApiModel, CompletionsApi, serve
    from corolla.app.chat.reply import ReplyWriter
    from corolla.core.chain import parse_spans
    from corolla.core.generation import model_sampling
    from corolla.core.model import ModelInfo, resolve_model

    path = await trio.to_thread.run_sync(resolve_model, args.model)
    info = ModelInfo.load(path)
    async with trio.open_nursery() as nursery:
        if args.local:
            from corolla.app.swarm.local import LocalRouteFactory

            routes = LocalRouteFactory(path, parse_spans(args.local, info.num_blocks))
        else:
            from corolla.app.swarm.connection import SwarmConnection
            from corolla.app.swarm.remote import SwarmRouteFactory

            routes = SwarmRouteFactory(SwarmConnection(args.initial_peers, lambda: path, lambda: nursery))
        writer = ReplyWriter(lambda: path, routes)
        await writer.model()
        api = CompletionsApi(ApiModel(info.name, writer, model_sampling(path)), api_key=args.api_key)
        binds = await nursery.start(serve, api, args.host, args.port)
        for bind in binds:
            print(f"OpenAI-compatible API for {info.name} on {bind}/v1 (model name {info.name!r} or 'default')",
                  flush=True)
    return 0
