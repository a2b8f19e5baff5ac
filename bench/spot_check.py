"""What spot-checks cost, and whether they catch a liar, on a loopback swarm of the default model.

Two honest `corolla serve --blocks 0:30` processes. Part 1: greedy generation of a realistic reply
(--tokens, 128 by default) with spot-checks off, at the default rate and at every step, interleaved
--repeats times so that changes in the machine's load hit every setting alike; the median tokens/s
(the whole reply: joining the swarm, opening the route, decoding, the final check) and its ratio to
"off" (the target is a cost of at most 10 % at the default rate). Also per setting: how far the shown
text trailed the decoding at most (text waits for its check), and the median wait between the last
token and the reply's end (the final check is there). Checks run beside the decoding; a hop's
outputs are checked at the latest when SpotCheck.held are unchecked. Part 2: a liar (a server in this
process that claims to be the fastest, answers its first --honest steps honestly and then returns
random, zero or slightly scaled hidden states) joins; the text must equal the honest runs', and the
liar must be caught.

    python bench/spot_check.py [--tokens 128] [--repeats 3] [--honest 4] [--threads N] [--held N]
"""

from __future__ import annotations

import argparse
import os
import statistics
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
from corolla.p2p import spotcheck
from corolla.p2p.discovery import announce
from corolla.p2p.host import open_peer
from corolla.p2p.server import ServerNode
from corolla.p2p.spotcheck import DEFAULT_RATE
from tests.hostile import LIES, make_liar

PROMPT = "Here is a short story about a robot who learns to paint:"


class MeasuredDecoder(Decoder):
    """A decoder that measures how far the shown text trails the decoding."""

    held = 0  # most tokens decided but not shown yet (waiting for their check)
    last_token_at = 0.0  # perf_counter when the last token was decided

    def show_checked(self, position: int | None) -> None:
        super().show_checked(position)
        if self.shown is not None:
            self.held = max(self.held, len(self.token_ids) - self.shown)

    def advance(self, out: torch.Tensor) -> torch.Tensor | None:
        hidden = super().advance(out)
        self.last_token_at = time.perf_counter()
        return hidden


def cpu_seconds(servers) -> float:
    """CPU time the server processes used so far (user and system, from /proc)."""
    total = 0
    for server in servers:
        try:
            fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def decoder(path: Path, tokenizer, head: ClientHead, tokens: int) -> MeasuredDecoder:
    return MeasuredDecoder(head, tokenizer, SamplingParams(max_new_tokens=tokens, temperature=0), tokenizer(PROMPT).input_ids)


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
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--honest", type=int, default=4, help="steps of each session the liar answers honestly")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads of each server (default: torch's)")
    ap.add_argument("--held", type=int, default=spotcheck.HELD_TOKENS,
                    help="outputs of a hop left unchecked at most before a check starts anyway")
    args = ap.parse_args()
    spotcheck.HELD_TOKENS = args.held
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    path = resolve_model("default", progress=False)
    model, head, tok = ModelInfo.load(path), ClientHead.load(path), AutoTokenizer.from_pretrained(path)
    threads = () if args.threads is None else ("--threads", str(args.threads))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, LocalSwarm(Path(tmp), announce_period=3.0) as swarm:
        for name in ("honest-a", "honest-b"):
            swarm.start_server("--blocks", f"0:{model.num_blocks}", *threads, name=name)
        for server in swarm.servers:
            server.wait_for("serving block")

        def run(rate: float) -> tuple[str, float, int, float, float]:
            d = decoder(path, tok, head, args.tokens)
            cpu0, t0 = cpu_seconds(swarm.servers), time.perf_counter()
            text = trio.run(lambda: generate_through_swarm(path, d, [swarm.bootstrap_addr], spot_check=rate))
            end = time.perf_counter()
            return text, len(d.token_ids) / (end - t0), d.held, end - d.last_token_at, cpu_seconds(swarm.servers) - cpu0

        run(0.0)  # warm-up
        rates = {"off": 0.0, f"default ({DEFAULT_RATE:g})": DEFAULT_RATE, "every step": 1.0}
        runs: dict[str, list[tuple[float, int, float, float]]] = {name: [] for name in rates}
        texts = set()
        for _ in range(args.repeats):  # interleaved, so that load changes hit every setting alike
            for name, rate in rates.items():
                text, tps, held, tail, cpu = run(rate)
                texts.add(text)
                runs[name].append((tps, held, tail, cpu))
        median = {name: statistics.median(r[0] for r in runs[name]) for name in rates}
        print(f"\nspot-check cost, {args.tokens} greedy tokens (checked at the latest every {args.held}), 2 honest servers "
              f"({'torch default' if args.threads is None else args.threads} threads each) and this client "
              f"on {os.cpu_count()} cores; load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} "
              f"after; median of {args.repeats}")
        print(f"{'setting':<16}{'tokens/s':>10}{'vs off':>9}{'runs (tokens/s)':>24}{'text held':>11}{'end wait':>10}"
              f"{'servers CPU':>13}")
        for name in rates:
            each = " ".join(f"{r[0]:.2f}" for r in runs[name])
            held = max(r[1] for r in runs[name])
            tail = statistics.median(r[2] for r in runs[name])
            cpu = statistics.median(r[3] for r in runs[name])
            print(f"{name:<16}{median[name]:>10.2f}{median[name] / median['off']:>9.3f}{each:>24}"
                  f"{held:>8} tok{1000 * tail:>8.0f}ms{cpu:>12.2f}s")
        print("text held: most tokens decided but not yet shown (they wait for their check); end wait: from the "
              "last token to the reply's end (median); servers CPU: both servers' CPU time per reply (median), "
              "which the machine's load does not change much")
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
