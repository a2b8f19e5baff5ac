"""What hostile peers send: hand-built frames that break the wire format in every known way, and info
replies that lie. Shared by the tests and bench/fuzz.py."""

from __future__ import annotations

import functools
import random
import struct

import msgpack
import torch

U64 = 2**64 - 1


def frame(header: object, payload: bytes = b"", *, payload_len: int | None = None,
          head_len: int | None = None, head: bytes | None = None) -> bytes:
    """A frame as the wire lays it out, with lengths that may lie."""
    head = msgpack.packb(header, use_bin_type=True) if head is None else head
    lengths = struct.pack(">II", len(head) if head_len is None else head_len,
                          len(payload) if payload_len is None else payload_len)
    return lengths + head + payload


def spec(dtype: object, shape: object) -> dict:
    return {"dtype": dtype, "shape": shape}


def bad_frames(kind: str, hidden: int) -> dict[str, bytes]:
    """Frames that must each get an error reply on any protocol; `kind` is the message type to claim."""
    f32 = bytes(4 * hidden)
    return {
        "dtype is a list": frame({"type": kind, "tensors": [spec(["float32"], [1, 1, hidden])]}, f32),
        "dtype is a map": frame({"type": kind, "tensors": [spec({"float32": 1}, [1, 1, hidden])]}, f32),
        "dtype unknown": frame({"type": kind, "tensors": [spec("int64", [1, 1, hidden])]}, bytes(8 * hidden)),
        "2^64-1 next to a 0": frame({"type": kind, "tensors": [spec("float32", [U64, 0])]}),
        "negative dimension": frame({"type": kind, "tensors": [spec("float32", [1, -1, hidden])]}),
        "bool dimension": frame({"type": kind, "tensors": [spec("float32", [True, 1, hidden])]}, f32),
        "float dimension": frame({"type": kind, "tensors": [spec("float32", [1.0, 1, hidden])]}, f32),
        "rank 9": frame({"type": kind, "tensors": [spec("float32", [1] * 8 + [hidden])]}, f32),
        "payload says 2^29 bytes": frame({"type": kind}, payload_len=2**29),
        "payload says 2^32-1 bytes": frame({"type": kind}, payload_len=2**32 - 1),
        "payload longer than declared": frame({"type": kind, "tensors": []}, bytes(16)),
        "payload shorter than declared": frame({"type": kind, "tensors": [spec("float32", [1, 1, hidden])]},
                                               bytes(4 * hidden), payload_len=4),
        "header not msgpack": frame(None, head=b"\xc1\xc1\xc1\xc1"),
        "header is a list": frame(["type", kind]),
        "header type is an int": frame({"type": 5}),
        "tensors is a map": frame({"type": kind, "tensors": {"dtype": "float32"}}),
        "spec is a string": frame({"type": kind, "tensors": ["float32"]}),
        "int map keys": frame({1: 2, "type": kind}),
        "ext type": frame(None, head=msgpack.packb({"type": kind, "x": msgpack.ExtType(1, b"ab")})),
        "bin in header": frame({"type": kind, "x": b"\x00" * 8}),
        "nested 2000 deep": frame(None, head=b"\x91" * 2000 + b"\xc0"),
        "bad utf-8": frame(None, head=b"\x81\xa4type\xa2\xff\xfe"),
        "header length 2^32-1": frame({"type": kind}, head_len=2**32 - 1),
        "five tensors": frame({"type": kind, "tensors": [spec("float32", [1, 1, hidden])] * 5}, f32 * 5),
    }


def odd_requests(kind: str, hidden: int) -> dict[str, bytes]:
    """Well-formed frames with odd contents: each must get a reply (an error or a result)."""
    f32 = bytes(4 * hidden)
    t = [spec("float32", [1, 1, hidden])]
    return {
        "0-element bfloat16": frame({"type": kind, "tensors": [spec("bfloat16", [1, 0, hidden])]}),
        "0-element float32": frame({"type": kind, "tensors": [spec("float32", [0])]}),
        "start is a string": frame({"type": kind, "start": "0", "end": 10, "tensors": t}, f32),
        "end is a float": frame({"type": kind, "start": 0, "end": 10.0, "tensors": t}, f32),
        "end past the span": frame({"type": kind, "start": 0, "end": 10**9, "tensors": t}, f32),
        "start after end": frame({"type": kind, "start": 5, "end": 2, "tensors": t}, f32),
        "max_length 2^64-1": frame({"type": kind, "max_length": U64, "tensors": t}, f32),
        "max_length is a string": frame({"type": kind, "max_length": "64", "tensors": t}, f32),
        "batch 0": frame({"type": kind, "max_length": 8, "batch_size": 0, "tensors": t}, f32),
        "wrong hidden size": frame({"type": kind, "tensors": [spec("float32", [1, 1, hidden + 1])]},
                                   bytes(4 * hidden + 4)),
        "NaN hidden states": frame({"type": kind, "tensors": t}, struct.pack("<f", float("nan")) * hidden),
        "rank 1": frame({"type": kind, "tensors": [spec("float32", [hidden])]}, f32),
        "bfloat16 step": frame({"type": kind, "tensors": [spec("bfloat16", [1, 1, hidden])]}, bytes(2 * hidden)),
        "wrong type": frame({"type": "nonsense", "tensors": t}, f32),
    }


@functools.cache
def _catalogue(kind: str, hidden: int) -> tuple[bytes, ...]:
    """Every catalogued frame claiming `kind`, in a fixed order (built once: the fuzzer draws from it
    for every frame)."""
    pool = {**bad_frames(kind, hidden), **odd_requests(kind, hidden)}
    return tuple(pool[name] for name in sorted(pool))


def random_frame(rng: random.Random, kinds: list[str], hidden: int) -> bytes:
    """One fuzzed frame: a catalogued one, a mutation of one (bytes flipped, cut, lengths changed),
    or random bytes."""
    kind = rng.choice(kinds)
    base = rng.choice(_catalogue(kind, hidden))
    choice = rng.random()
    if choice < 0.4:
        return base
    data = bytearray(base)
    if choice < 0.7:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if choice < 0.85:
        return bytes(data[:rng.randrange(1, len(data) + 1)]) + rng.randbytes(rng.randint(0, 64))
    return rng.randbytes(rng.randint(1, 256))


def lying_infos(peer_id: str, name: str, model_hash: str, num_blocks: int) -> dict[str, dict]:
    """Info replies with one lie each, over an otherwise plausible record (all blocks, very fast)."""
    base = {"peer_id": peer_id, "model_name": name, "model_hash": model_hash, "start": 0, "end": num_blocks,
            "state": "online", "dtype": "float32", "hidden_size": 576, "block_ms": 0.01, "throughput": 1e5,
            "free_cache_tokens": 8192, "active_sessions": 0, "max_sessions": 16, "version": "1.0.0"}
    return {
        "end is a string": {**base, "end": str(num_blocks)},
        "start is a string": {**base, "start": "0"},
        "end is a float": {**base, "end": float(num_blocks)},
        "negative block_ms": {**base, "block_ms": -5.0},
        "NaN block_ms": {**base, "block_ms": float("nan")},
        "inf throughput": {**base, "throughput": float("inf")},
        "huge free_cache_tokens": {**base, "free_cache_tokens": 2**63},
        "bool max_sessions": {**base, "max_sessions": True},
        "blocks backwards": {**base, "start": num_blocks, "end": 0},
        "unknown dtype": {**base, "dtype": ["float32"]},
        "adapters is a string": {**base, "adapters": "greeter"},
        "adapter name is a path": {**base, "adapters": ["../../etc/passwd"]},
        "someone else's peer id": {**base, "peer_id": "12D3KooWQsaHPg8vb7pCsDaVE31hBG38kDJxeK6LewuuCMbWoSps"},
        "plausible but serves nothing": base,
    }


LIES = {
    "random": lambda out: torch.randn_like(out) * out.std(),
    "zero": torch.zeros_like,
    "scaled": lambda out: out * 1.02,
}


def make_liar(node, lie, honest_steps: int) -> None:
    """Make a p2p.server.ServerNode answer session steps honestly `honest_steps` times per session,
    then with `lie(output)`; it lies on every forward request (as a checker). It also claims to be the
    fastest server, so that routes start on it."""
    run, step, steps = node._run, node.batcher.forward, {}

    async def lying_step(runtime, session_id, hidden, start=None, prompts=None):  # a session's step (batched)
        out, seconds, batch = await step(runtime, session_id, hidden, start, prompts)
        steps[session_id] = steps.get(session_id, 0) + 1
        return (out if steps[session_id] <= honest_steps else lie(out)), seconds, batch

    async def lying(fn, *args):  # a forward request: what a checker answers
        return lie(await run(fn, *args))

    node.batcher.forward = lying_step
    node._run = lying
    node.observe = lambda *a: None
    node.block_ms = 0.001
