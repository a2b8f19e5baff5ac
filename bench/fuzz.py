"""Seeded fuzzing of a real `corolla serve` process over all its protocols (info, forward, inference).

Frames come from tests/hostile.py: every catalogued malformed or odd frame, mutations of them (bytes
flipped, cut short, random tails) and random bytes. Each goes out on a new stream of one of several
client peers (inside an open session for part of the inference frames). Counted:
- replies: error replies, normal replies, streams the server ended without a reply;
- hangs: no reply and no end of stream within HANG_S (the server's own timeouts are 10 s);
- crashes: whether the server process exited (then every later stream fails: "no stream");
- memory: the server's resident memory after warm-up and at the end.

    python bench/fuzz.py [--frames 100000] [--seed 1] [--workers 256] [--peers 8] [--max-sessions 256]

Most of a run's time is streams waiting: a frame cut short mid-session leaves its stream stalled until
the server's body timeout (10 s). So the target serves many sessions at once (--max-sessions, with
the cache to match), and many streams run side by side; every frame is still sent and checked.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corolla.app.demo.processes import LocalSwarm
from corolla.core.model import ModelInfo, resolve_model
from corolla.p2p.client import SwarmClient, open_client_peer, open_stream
from corolla.p2p.errors import PeerUnavailableError, ProtocolError
from corolla.p2p.records import FORWARD_PROTOCOL, INFERENCE_PROTOCOL, INFO_PROTOCOL
from corolla.p2p.wire import FrameCutShort, StreamGone, encode, read_message, write_message
from tests.hostile import random_frame

HANG_S = 20.0  # the server ends a stalled stream after 10 s (body timeout)
PROTOCOLS = {INFO_PROTOCOL: ["info"], FORWARD_PROTOCOL: ["forward"], INFERENCE_PROTOCOL: ["open", "step"]}


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.outcomes: Counter[str] = Counter()
        self.hangs = 0


async def one_stream(peer, server_id: str, rng: random.Random, hidden: int, tally: Tally, budget: int) -> int:
    """Send fuzzed frames on one new stream until it ends; return how many were sent."""
    protocol = rng.choice(list(PROTOCOLS))
    in_session = protocol == INFERENCE_PROTOCOL and rng.random() < 0.8
    try:
        stream = await open_stream(peer, server_id, protocol, 10)
    except PeerUnavailableError:
        tally.outcomes["no stream"] += 1
        return 0
    sent = 0
    try:
        if in_session:
            await write_message(stream, encode({"type": "open", "max_length": 64}), timeout=10)
            header, _ = await read_message(stream, idle_timeout=HANG_S, body_timeout=HANG_S)
            if header.get("type") != "opened":
                tally.outcomes[f"open refused: {header.get('code')}"] += 1
                return 0
        count = min(budget, rng.randint(1, 60) if in_session else 1)
        for i in range(count):
            data = random_frame(rng, ["step"] if in_session else PROTOCOLS[protocol], hidden)
            await write_message(stream, data, timeout=10)
            if i == count - 1:  # the server then sees the end of a frame cut short at once
                await stream.close_write()
            sent += 1
            tally.sent += 1
            try:
                header, _ = await read_message(stream, idle_timeout=HANG_S, body_timeout=HANG_S)
            except FrameCutShort:
                # The reply began but did not finish in time (a loaded machine): what follows on the
                # stream is the middle of that reply, which read as a new frame gives nonsense
                # lengths (the 2,225,370,233-byte "header" once seen here: 0x84a47479, the first
                # bytes of a reply's msgpack header {"type": ...}). End the stream.
                tally.outcomes["reply cut short"] += 1
                return sent
            except trio.TooSlowError:
                # A frame cut short mid-session leaves the server waiting for its rest (it may wait the
                # session's idle time): end our side; a server that still says nothing is hung.
                await stream.close_write()
                try:
                    header, _ = await read_message(stream, idle_timeout=HANG_S, body_timeout=HANG_S)
                    tally.outcomes[f"after our end: {header.get('type')}:{header.get('code') or ''}"] += 1
                except trio.TooSlowError:
                    tally.hangs += 1
                    tally.outcomes["hang"] += 1
                return sent
            tally.outcomes[f"{header.get('type')}:{header.get('code') or ''}"] += 1
    except StreamGone:
        tally.outcomes["stream ended"] += 1
    except ProtocolError as exc:  # the server's reply did not parse: that would be a server bug
        tally.outcomes[f"bad reply: {exc}"] += 1
    except trio.TooSlowError:
        tally.outcomes["write timed out"] += 1
    finally:
        with trio.move_on_after(1):
            try:
                await stream.close()
            except Exception:  # noqa: BLE001 - the stream may be gone
                pass
    return sent


async def fuzz(args, model: ModelInfo, swarm: LocalSwarm, server_id: str) -> Tally:
    tally = Tally()
    rng = random.Random(args.seed)
    seeds = [rng.randrange(2**32) for _ in range(args.workers)]
    t0 = time.monotonic()

    deadline = t0 + 60 * args.minutes if args.minutes else float("inf")

    async def worker(peer, seed: int) -> None:
        wrng = random.Random(seed)
        while tally.sent < args.frames and time.monotonic() < deadline:
            await one_stream(peer, server_id, wrng, model.hidden_size, tally, args.frames - tally.sent)

    async def report() -> None:
        while tally.sent < args.frames and time.monotonic() < deadline:
            await trio.sleep(30)
            rate = tally.sent / (time.monotonic() - t0)
            print(f"  {tally.sent} frames ({rate:.0f}/s), hangs {tally.hangs}", flush=True)

    async with trio.open_nursery() as nursery:
        peers = []
        for _ in range(args.peers):
            peers.append(await nursery.start(hold_peer, swarm.bootstrap_addr, model))
        nursery.start_soon(report)
        async with trio.open_nursery() as workers:
            for i, seed in enumerate(seeds):
                workers.start_soon(worker, peers[i % len(peers)], seed)
        nursery.cancel_scope.cancel()
    return tally


async def hold_peer(bootstrap: str, model: ModelInfo, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with open_client_peer([bootstrap], host="127.0.0.1") as peer:
        await SwarmClient(peer, model.name, model.hash, model.num_blocks).servers()  # learn the address
        task_status.started(peer)
        await trio.sleep_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=256)
    ap.add_argument("--peers", type=int, default=8)
    ap.add_argument("--max-sessions", type=int, default=256, help="the target server's session limit")
    ap.add_argument("--minutes", type=float, default=0.0, help="stop after this long even if short of --frames")
    args = ap.parse_args()
    path = resolve_model("default", progress=False)
    model = ModelInfo.load(path)
    with tempfile.TemporaryDirectory() as tmp, LocalSwarm(Path(tmp), announce_period=3.0) as swarm:
        server = swarm.add_server("--blocks", "0:10", "--max-sessions", str(args.max_sessions),
                                  "--cache-tokens", str(64 * args.max_sessions), name="target")
        server_id = server.wait_for(r"serving blocks? .* as (\S+);").group(1)
        proc = psutil.Process(server.pid)
        t0 = time.monotonic()
        warm = trio.run(fuzz, argparse.Namespace(**{**vars(args), "frames": min(2000, args.frames), "minutes": 0}),
                        model, swarm, server_id)
        rss0 = proc.memory_info().rss
        tally = trio.run(fuzz, args, model, swarm, server_id)
        seconds = time.monotonic() - t0
        alive = server.proc.poll() is None
        rss1 = proc.memory_info().rss if alive else 0
        crashes = 0 if alive else 1
        traces = server.output().count("Traceback")
    print(f"\nfuzzed a real server: {tally.sent} frames after {warm.sent} warm-up frames, seed {args.seed}, "
          f"{seconds:.0f} s ({(tally.sent + warm.sent) / seconds:.0f} frames/s)")
    print(f"crashes {crashes}, hangs {tally.hangs + warm.hangs}, tracebacks in the server log {traces}")
    if alive:
        print(f"server memory after warm-up {rss0 / 2**20:.0f} MiB, at the end {rss1 / 2**20:.0f} MiB "
              f"(growth {(rss1 - rss0) / 2**20:+.1f} MiB)")
    print("outcomes:")
    for outcome, n in (tally.outcomes + warm.outcomes).most_common():
        print(f"  {n:>7}  {outcome}")


if __name__ == "__main__":
    main()
