"""What spot-checks cost, and whether they catch a liar, on a loopback swarm of the default model.

Two honest `corolla serve --blocks 0:30` processes. Part 1: greedy generation with spot-checks off,
at the default rate and at every step; tokens/s and the ratio to "off", measured in this run (the
target is a cost of at most 10 % at the default rate). Checks run beside the decoding, and every
output not yet checked is checked once at the end; text is shown as it is checked. Part 2: a liar (a
server in this process that claims to be the fastest, answers its first --honest steps honestly and
then returns random, zero or slightly scaled hidden states) joins; the text must equal the honest
runs', and the liar must be caught.

    python bench/spot_check.py [--tokens 32] [--repeats 3] [--honest 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # this process shares 2 cores with two servers
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="corolla-bench-")  # the reputation file stays here

import torch
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corolla.app.demo.processes import LocalSwarm
from corolla.app.swarm.remote import generate_through_swarm
from corolla.app.swarm.route import RouteListener
from corolla.core.generation import Decoder, SamplingParams
from corolla.core.head import ClientHead
from corolla.core.model import ModelInfo, resolve_model
from corolla.core.span import Span
from corolla.p2p.discovery import announce
from corolla.p2p.host import open_peer
from corolla.p2p.server import ServerNode
from corolla.p2p.spotcheck import DEFAULT_RATE
from tests.hostile import LIES, make_liar

PROMPT = "Here is a short story about a robot who learns to paint:"


def decoder(path: Path, tokenizer, head: ClientHead, tokens: int) -> Decoder:
    return Decoder(head, tokenizer, SamplingParams(max_new_tokens=tokens, temperature=0), tokenizer(PROMPT).input_ids)


async def serve_liar(path: Path, model: ModelInfo, bootstrap: str, lie, honest: int,
                     task_status=trio.TASK_STATUS_IGNORED):
    node = ServerNode(Span.load(path, 0, model.num_blocks), model.name, model.hash)
    make_liar(node, lie, honest)  # claims to be the fastest: every route starts on it
    async with open_peer(create_new_key_pair(), host="127.0.0.1", initial_peers=[bootstrap]) as peer:
        node.attach(peer.host)
        await announce(peer, model.name, model.hash, node.blocks)
        task_status.started(peer.peer_id)
        await trio.sleep_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--honest", type=int, default=4, help="steps of each session the liar answers honestly")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    path = resolve_model("default", progress=False)
    model, head, tok = ModelInfo.load(path), ClientHead.load(path), AutoTokenizer.from_pretrained(path)
    with tempfile.TemporaryDirectory() as tmp, LocalSwarm(Path(tmp), announce_period=3.0) as swarm:
        for name in ("honest-a", "honest-b"):
            swarm.start_server("--blocks", f"0:{model.num_blocks}", name=name)
        for server in swarm.servers:
            server.wait_for("serving blocks")

        def run(rate: float) -> tuple[str, float]:
            d = decoder(path, tok, head, args.tokens)
            t0 = time.perf_counter()
            text = trio.run(lambda: generate_through_swarm(path, d, [swarm.bootstrap_addr], spot_check=rate))
            return text, args.tokens / (time.perf_counter() - t0)

        run(0.0)  # warm-up
        rates = {"off": 0.0, f"default ({DEFAULT_RATE:g})": DEFAULT_RATE, "every step": 1.0}
        best: dict[str, float] = {name: 0.0 for name in rates}
        texts = set()
        for _ in range(args.repeats):  # interleaved, so that load changes hit every setting alike
            for name, rate in rates.items():
                text, tps = run(rate)
                texts.add(text)
                best[name] = max(best[name], tps)
        print(f"\nspot-check cost, {args.tokens} greedy tokens, 2 honest servers, best of {args.repeats}")
        print(f"{'setting':<16}{'tokens/s':>10}{'vs off':>9}")
        for name in rates:
            print(f"{name:<16}{best[name]:>10.2f}{best[name] / best['off']:>9.3f}")
        print(f"same text in every run: {len(texts) == 1}")

        expected = texts.pop() if len(texts) == 1 else None
        print(f"\nliar beside the honest servers, lying after {args.honest} honest steps, spot-check at the "
              f"default rate ({DEFAULT_RATE:g})")
        print(f"{'liar returns':<16}{'text equals honest':>20}{'liar banned':>13}")
        for name, lie in LIES.items():
            caught: list = []

            async def with_liar(lie=lie, caught=caught):
                async with trio.open_nursery() as nursery:
                    liar = await nursery.start(serve_liar, path, model, swarm.bootstrap_addr, lie, args.honest)
                    d = decoder(path, tok, head, args.tokens)
                    text = await generate_through_swarm(path, d, [swarm.bootstrap_addr], spot_check=DEFAULT_RATE,
                                                        listener=RouteListener(on_liar=caught.append))
                    nursery.cancel_scope.cancel()
                    return text, str(liar)

            text, liar = trio.run(with_liar)
            banned = [c.peer_id for c in caught] == [liar]
            print(f"{name:<16}{str(text == expected):>20}{str(banned):>13}")

if __name__ == "__main__":
    main()
