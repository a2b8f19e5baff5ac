"""Property tests of everything a peer parses from another: frames (headers, tensor specs), server info
records, and the server's protocol handlers fed arbitrary bytes. Whatever arrives, the only outcomes
are a typed refusal or a well-formed answer. (bench/fuzz.py runs the long version over the network.)"""

from __future__ import annotations

import math
from types import SimpleNamespace

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libp2p.network.stream.exceptions import StreamEOF

from corolla.core.span import Span
from corolla.p2p.errors import ProtocolError
from corolla.p2p.records import ServerInfo
from corolla.p2p.server import ServerNode
from corolla.p2p.wire import StreamGone, read_message
from tests.hostile import frame, lying_infos

ANSWERS = {"error", "info", "result", "opened", "closed"}

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
dims = st.one_of(st.integers(min_value=0, max_value=80), st.sampled_from([2**64 - 1, 2**31, 1 << 24, -1]), values)
specs = st.fixed_dictionaries({
    "dtype": st.one_of(st.sampled_from(["float32", "float16", "bfloat16"]), values),
    "shape": st.one_of(st.lists(dims, max_size=5), values),
})
headers = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["info", "forward", "open", "step", "close"]), values)},
    optional={"tensors": st.one_of(st.lists(specs, max_size=3), values), "start": values, "end": values,
              "max_length": values, "batch_size": values, "session": values},
)


@st.composite
def frames(draw) -> bytes:
    kind = draw(st.sampled_from(["built", "lying lengths", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    header = draw(headers)
    payload = draw(st.binary(max_size=600))
    if kind == "built":
        return frame(header, payload)
    return frame(header, payload, payload_len=draw(st.integers(0, 2**32 - 1)), head_len=draw(st.integers(0, 2**32 - 1)))


class MemoryStream:
    """A stream whose peer already sent `data`; what the server writes is kept in `out`."""

    def __init__(self, data: bytes) -> None:
        self.data, self.out = bytearray(data), bytearray()
        self.muxed_conn = SimpleNamespace(peer_id="hypothesis")

    async def read(self, n: int) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.data:
            raise StreamEOF("end of input")
        chunk = bytes(self.data[:n])
        del self.data[:n]
        return chunk

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.out += data

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()


@pytest.fixture(scope="module")
def node(tiny_model) -> ServerNode:
    span = Span.load(tiny_model, 0, 6)
    return ServerNode(span, "tiny", "hash", cache_tokens=256, session_idle_timeout=0.2)


def replies(out: bytes) -> list[dict]:
    """Parse what the server wrote: it must be whole, well-formed frames."""
    async def main() -> list[dict]:
        stream, got = MemoryStream(out), []
        while stream.data:
            header, _ = await read_message(stream, idle_timeout=1, body_timeout=1)
            got.append(header)
        return got

    return trio.run(main)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(frames(), min_size=1, max_size=4), protocol=st.sampled_from(["_info", "_forward", "_inference"]))
def test_server_handlers_answer_or_refuse_anything(node, data, protocol):
    """Frames in any order on any protocol: nothing escapes the handler, the answers are whole frames
    of known types, and no session is left behind."""
    stream = MemoryStream(b"".join(data))
    trio.run(node.serve_stream, stream, getattr(node, protocol))
    assert all(r["type"] in ANSWERS for r in replies(bytes(stream.out)))
    assert node.active_sessions == 0 and node.free_cache_tokens == node.cache_tokens


@settings(max_examples=150, deadline=None)
@given(data=frames())
def test_frames_parse_or_are_refused_by_name(data):
    async def main():
        try:
            with trio.fail_after(1):
                await read_message(MemoryStream(data), idle_timeout=1, body_timeout=1)
        except (ProtocolError, StreamGone):
            pass

    trio.run(main)


info_values = st.dictionaries(st.sampled_from(sorted(lying_infos("p", "m", "h", 30)["plausible but serves nothing"])),
                              values, max_size=14)


@settings(max_examples=150, deadline=None)
@given(base=st.sampled_from(sorted(lying_infos("p", "m", "h", 30))), changes=info_values)
def test_server_info_is_typed_and_in_range_or_refused(base, changes):
    record = {**lying_infos("peer", "m", "h", 30)[base], **changes}
    try:
        info = ServerInfo.from_wire(msgpack.unpackb(msgpack.packb(record), strict_map_key=False))
    except ProtocolError:
        return
    assert 0 <= info.start < info.end and isinstance(info.start, int) and isinstance(info.end, int)
    for name in ("block_ms", "throughput"):
        assert isinstance(getattr(info, name), float) and math.isfinite(getattr(info, name))
    assert info.block_ms > 0 and 0 <= info.free_cache_tokens <= 2**32
    assert all(not isinstance(getattr(info, n), bool) for n in ("start", "end", "max_sessions", "hidden_size"))
    assert isinstance(info.adapters, list) and all(isinstance(n, str) and "/" not in n for n in info.adapters)
