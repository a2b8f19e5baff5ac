"""The wire format: one message = a typed msgpack header plus raw tensor bytes. No pickle, ever.

Frame: 4-byte big-endian header length | 4-byte total payload length | msgpack header | tensor
payloads, back to back. The header's "tensors" list declares each payload's dtype and shape; the
receiver checks both lengths against `WireLimits` before reading anything else, then checks that the
declared tensors add up to the payload length. The whole frame after the lengths is read at once:
every read of a py-libp2p stream costs a lock round and often a window update.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from typing import Any

import msgpack
import torch
import trio
from libp2p.network.stream.exceptions import StreamClosed, StreamEOF, StreamError, StreamReset

from corolla.core.dtypes import DTYPE_NAMES, DTYPES, ELEMENT_BYTES
from corolla.p2p.errors import MessageTooLargeError, ProtocolError

log = logging.getLogger(__name__)

__all__ = ["DTYPES", "DTYPE_NAMES"]  # the wire names of dtypes; the table lives in core

_LENGTHS = struct.Struct(">II")


@dataclass(frozen=True)
class WireLimits:
    """What a receiver accepts from one message; anything larger is refused before it is read."""

    max_header_bytes: int = 64 * 1024
    max_tensors: int = 4
    max_rank: int = 4
    max_dim: int = 1 << 24  # no dimension above this, so a 0 elsewhere cannot hide a 2^64-1
    max_tensor_bytes: int = 256 * 1024 * 1024
    max_payload_bytes: int = 256 * 1024 * 1024


DEFAULT_LIMITS = WireLimits()


class FrameCutShort(trio.TooSlowError):
    """A frame started (its lengths were read) but its rest did not come in time: what is read next on
    the stream is the middle of that frame, so the stream is out of sync and must be ended."""


class StreamGone(Exception):
    """The stream ended (EOF, reset, closed) before a whole message was read or written."""


# Payloads above this are read only after their header has been checked: a peer must not make us
# wait for (and buffer) a body that its own header would not account for.
ONE_READ_MAX = 1024 * 1024


def tensor_nbytes(dtype: torch.dtype, shape: list[int]) -> int:
    return math.prod(shape) * ELEMENT_BYTES[DTYPE_NAMES[dtype]]


def encode(header: dict[str, Any], tensors: list[torch.Tensor] = ()) -> bytes:
    """One frame holding `header` and `tensors` (sent in their dtype, as contiguous CPU bytes)."""
    specs, payloads = [], []
    for t in tensors:
        if t.dtype not in DTYPE_NAMES:
            raise ProtocolError(f"cannot send dtype {t.dtype}; supported: {', '.join(DTYPES)}")
        t = t.detach().to("cpu").contiguous()
        specs.append({"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape)})
        # bfloat16 has no numpy twin: view the bytes as int16 to get at them.
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        payloads.append(raw.numpy().tobytes())
    head = msgpack.packb({**header, "tensors": specs}, use_bin_type=True)
    return b"".join([_LENGTHS.pack(len(head), sum(len(p) for p in payloads)), head, *payloads])


def is_int(x: Any) -> bool:
    """An int that is not a bool (msgpack gives True for a bool: never a count)."""
    return isinstance(x, int) and not isinstance(x, bool)


def check_header(header: Any, limits: WireLimits) -> list[tuple[torch.dtype, list[int], int]]:
    """The one parser of a frame header: a map with a string 'type' and well-formed tensor specs.
    Returns (dtype, shape, bytes) per declared tensor; raises ProtocolError naming the fault."""
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("header must be a map with a string 'type'")
    specs = header.get("tensors", [])
    if not isinstance(specs, list) or len(specs) > limits.max_tensors:
        raise ProtocolError(f"'tensors' must be a list of at most {limits.max_tensors} entries")
    checked = []
    for spec in specs:
        if not isinstance(spec, dict):
            raise ProtocolError("each tensor spec must be a map with 'dtype' and 'shape'")
        name = spec.get("dtype")
        if not isinstance(name, str) or name not in DTYPES:
            raise ProtocolError(f"unsupported dtype {_short(name)}; supported: {', '.join(DTYPES)}")
        dtype = DTYPES[name]
        shape = spec.get("shape")
        if (not isinstance(shape, list) or len(shape) > limits.max_rank
                or not all(is_int(d) and 0 <= d <= limits.max_dim for d in shape)):
            raise ProtocolError(f"bad shape {_short(shape)}: a list of at most {limits.max_rank} ints "
                                f"from 0 to {limits.max_dim}")
        nbytes = tensor_nbytes(dtype, shape)
        if nbytes > limits.max_tensor_bytes:
            raise MessageTooLargeError(
                f"tensor of shape {shape} ({nbytes} bytes) is over the limit of {limits.max_tensor_bytes} bytes")
        checked.append((dtype, shape, nbytes))
    return checked


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def decode_tensor(dtype: torch.dtype, shape: list[int], data: bytes | bytearray) -> torch.Tensor:
    if not data:  # torch.frombuffer refuses an empty buffer
        return torch.empty(shape, dtype=dtype)
    if dtype == torch.bfloat16:
        flat = torch.frombuffer(bytearray(data), dtype=torch.int16).view(torch.bfloat16)
    else:
        flat = torch.frombuffer(bytearray(data), dtype=dtype)
    return flat.reshape(shape)


async def _read_exactly(stream: Any, n: int, chunks: list[bytes] | None = None) -> bytes:
    """`n` bytes of `stream`; `chunks`: where the pieces read so far are kept (a caller whose wait
    ran out learns whether any were taken)."""
    chunks, got = [] if chunks is None else chunks, 0
    while got < n:
        try:
            chunk = await stream.read(n - got)
        except (StreamEOF, StreamReset, StreamClosed, StreamError) as exc:
            raise StreamGone(f"stream ended: {type(exc).__name__}") from exc
        if not chunk:
            raise StreamGone("stream ended")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


async def read_message(
    stream: Any,
    *,
    limits: WireLimits = DEFAULT_LIMITS,
    idle_timeout: float,
    body_timeout: float,
) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """Read one frame: wait up to `idle_timeout` s for it to start, then `body_timeout` s for the rest.

    Raises trio.TooSlowError on a timeout (FrameCutShort when the frame had begun), StreamGone when the
    stream ends, ProtocolError on a bad frame (after either of those two, the stream is out of sync
    and must be closed).
    """
    taken: list[bytes] = []
    with trio.move_on_after(idle_timeout) as idle:
        first = await _read_exactly(stream, _LENGTHS.size, taken)
    if idle.cancelled_caught:
        if taken:  # part of the lengths was read
            raise FrameCutShort(f"a frame began but its lengths did not come within {idle_timeout:g} s")
        raise trio.TooSlowError
    try:
        return await _read_rest(stream, first, limits, body_timeout)
    except trio.TooSlowError:
        raise FrameCutShort(f"a frame began but its rest did not come within {body_timeout:g} s") from None


async def _read_rest(stream: Any, first: bytes, limits: WireLimits, body_timeout: float
                     ) -> tuple[dict[str, Any], list[torch.Tensor]]:
    with trio.fail_after(body_timeout):
        head_len, payload_len = _LENGTHS.unpack(first)
        if head_len > limits.max_header_bytes:
            raise MessageTooLargeError(f"header of {head_len} bytes is over the limit of "
                                       f"{limits.max_header_bytes} bytes")
        if payload_len > limits.max_payload_bytes:
            raise MessageTooLargeError(f"payload of {payload_len} bytes is over the limit of "
                                       f"{limits.max_payload_bytes} bytes")
        if payload_len <= ONE_READ_MAX:
            body = await _read_exactly(stream, head_len + payload_len)
            head, payload = body[:head_len], memoryview(body)[head_len:]
            header, specs = _parse_header(head, payload_len, limits)
        else:
            head = await _read_exactly(stream, head_len)
            header, specs = _parse_header(head, payload_len, limits)
            payload = memoryview(await _read_exactly(stream, payload_len))
        tensors, at = [], 0
        for dtype, shape, nbytes in specs:
            tensors.append(decode_tensor(dtype, shape, payload[at:at + nbytes]))
            at += nbytes
    return header, tensors


def _parse_header(head: bytes, payload_len: int, limits: WireLimits
                  ) -> tuple[dict[str, Any], list[tuple[torch.dtype, list[int], int]]]:
    try:
        header = msgpack.unpackb(head, raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"header is not valid msgpack: {exc}") from exc
    specs = check_header(header, limits)
    declared = sum(nbytes for _, _, nbytes in specs)
    if declared != payload_len:
        raise ProtocolError(f"the tensors declared take {declared} bytes but the frame says {payload_len}")
    return header, specs


async def write_message(stream: Any, frame: bytes, *, timeout: float) -> None:
    """Write one encoded frame within `timeout` s (raises trio.TooSlowError, StreamGone)."""
    with trio.fail_after(timeout):
        try:
            await stream.write(frame)
        except (StreamEOF, StreamReset, StreamClosed, StreamError) as exc:
            raise StreamGone(f"stream ended: {type(exc).__name__}") from exc


def error_frame(code: str, message: str) -> bytes:
    return encode({"type": "error", "code": code, "message": message})


async def close_stream(stream: Any, timeout: float = 1.0) -> None:
    """Close `stream`, giving up after `timeout` s (a dead peer's stream may not close cleanly)."""
    with trio.move_on_after(timeout):
        try:
            await stream.close()
        except Exception as exc:  # noqa: BLE001 - closing a dead stream fails in several ways
            log.debug("closing a stream: %s", exc)
