"""Small records peers exchange: which blocks a server holds and how it is doing."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from corolla.core.adapters import ADAPTER_NAME
from corolla.core.dtypes import DTYPES
from corolla.core.quantization import Quantization
from corolla.p2p.blocks import BlockRange, format_blocks
from corolla.p2p.errors import ProtocolError
from corolla.p2p.names import NICKNAME_MAX, NicknameError, check_nickname, peer_name

__all__ = ["BlockRange", "format_blocks"]

PROTOCOL_VERSION = "1.0.0"
INFO_PROTOCOL = f"/corolla/info/{PROTOCOL_VERSION}"
INFERENCE_PROTOCOL = f"/corolla/inference/{PROTOCOL_VERSION}"
FORWARD_PROTOCOL = f"/corolla/forward/{PROTOCOL_VERSION}"
BACKWARD_PROTOCOL = f"/corolla/backward/{PROTOCOL_VERSION}"  # training: p2p/backward.py
PUSH_PROTOCOL = f"/corolla/push/{PROTOCOL_VERSION}"  # server-to-server steps: p2p/steps.py
PROBE_PROTOCOL = f"/corolla/probe/{PROTOCOL_VERSION}"  # link throughput between servers: p2p/links.py

ONLINE = "online"
LEAVING = "leaving"


def model_key(model_name: str, model_hash: str) -> str:
    """DHT key under which every server of one checkpoint also announces (one lookup finds most
    servers; a DHT peer keeps at most 20 providers per key, so per-block keys fill the gaps)."""
    raw = f"corolla/{PROTOCOL_VERSION}/{model_name}/{model_hash}/servers"
    return hashlib.sha256(raw.encode()).hexdigest()


def directory_key() -> str:
    """DHT key under which every server announces whatever model it serves: how a client learns
    which models the swarm has (each server's info then says which model and blocks)."""
    return hashlib.sha256(f"corolla/{PROTOCOL_VERSION}/models".encode()).hexdigest()


def block_key(model_name: str, model_hash: str, block: int) -> str:
    """DHT key (hex of a sha256) under which servers of one block of one checkpoint announce."""
    raw = f"corolla/{PROTOCOL_VERSION}/{model_name}/{model_hash}/block/{block}"
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class ServerInfo:
    """What a server says about itself on the info protocol. Times in ms, throughput in tokens/s."""

    peer_id: str
    model_name: str
    model_hash: str
    start: int
    end: int
    state: str = ONLINE
    dtype: str = "float32"
    quant: str = "none"  # how its weights are quantized (core/quantization.py): none, int8, nf4, int4
    hidden_size: int = 0
    block_ms: float = 1.0  # compute per block per decoded token
    throughput: float = 0.0  # decoded tokens/s through the whole span
    free_cache_tokens: int = 0
    active_sessions: int = 0
    max_sessions: int = 0
    version: str = PROTOCOL_VERSION
    reachability: str = "unknown"  # can others dial it: public, private (behind a NAT) or unknown
    relays: list[str] = field(default_factory=list)  # its /p2p-circuit addresses when private
    nickname: str = ""  # chosen by the server's owner, shown beside the short id (names.peer_name)
    model_blocks: int = 0  # how many blocks the whole model has (0: not said)
    # round trip (ms) from this server to servers holding the blocks after its span, by peer id, as
    # this server measured it: what a hidden state pays when one server hands it to the next
    next_rtt_ms: dict[str, float] = field(default_factory=dict)
    # throughput (Mbit/s) this server measured sending a prefill-sized transfer to those servers, by
    # peer id: what a long prompt or a replay pays per byte on that link (p2p/links.py)
    next_mbps: dict[str, float] = field(default_factory=dict)
    adapters: list[str] = field(default_factory=list)  # LoRA adapters a session may pick, by name
    rtt_ms: float = field(default=0.0, compare=False)  # measured by the client, not sent

    @property
    def blocks(self) -> BlockRange:
        return BlockRange(self.start, self.end)

    @property
    def precision(self) -> tuple[str, str]:
        """(dtype, quantization): what decides how far its outputs may be from another server's."""
        return self.dtype, self.quant

    @property
    def precision_text(self) -> str:
        """'float32', or with quantized weights 'float32+int4' (activations, then weights)."""
        return self.dtype if self.quant == "none" else f"{self.dtype}+{self.quant}"

    @property
    def name(self) -> str:
        """How people see this server: 'alice (…XuRRFrVM)'."""
        return peer_name(self.peer_id, self.nickname)

    def links(self) -> list[tuple[str, float, float | None]]:
        """(peer id, round trip ms, Mbit/s or None when not probed) to each server of the next blocks
        this server measured, nearest first."""
        return [(pid, rtt, self.next_mbps.get(pid))
                for pid, rtt in sorted(self.next_rtt_ms.items(), key=lambda item: item[1])]

    def to_wire(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rtt_ms")
        return d

    @classmethod
    def from_wire(cls, d: Any) -> ServerInfo:
        """The one parser of an info reply: every field typed and in range, or ProtocolError."""
        if not isinstance(d, dict):
            raise ProtocolError("server info must be a map")
        values: dict[str, Any] = {}
        for name, (kind, low, high) in _INFO_FIELDS.items():
            if name not in d:
                if name in _INFO_REQUIRED:
                    raise ProtocolError(f"bad server info: '{name}' is missing")
                continue
            values[name] = _checked(name, d[name], kind, low, high)
        if not values["start"] < values["end"]:
            raise ProtocolError(f"bad server info: blocks {values['start']}:{values['end']} (need start < end)")
        if values.get("state", ONLINE) not in (ONLINE, LEAVING):
            raise ProtocolError(f"bad server info: unknown state {values['state']!r}")
        if values.get("dtype", "float32") not in DTYPES:
            raise ProtocolError(f"bad server info: unknown dtype {values['dtype']!r}")
        if values.get("quant", "none") not in QUANTIZATIONS:
            raise ProtocolError(f"bad server info: unknown quantization {values['quant']!r}")
        try:
            check_nickname(values.get("nickname", ""))
        except NicknameError as exc:
            raise ProtocolError(f"bad server info: {exc}") from None
        if values.get("model_blocks") and values["end"] > values["model_blocks"]:
            raise ProtocolError(f"bad server info: blocks end at {values['end']}, past the model's "
                                f"{values['model_blocks']}")
        if values.get("reachability", "unknown") not in REACHABILITIES:
            raise ProtocolError(f"bad server info: unknown reachability {values['reachability']!r}")
        if "relays" in d:
            values["relays"] = _checked_list("relays", d["relays"], MAX_RELAYS, 512)
        if "next_rtt_ms" in d:
            values["next_rtt_ms"] = _checked_links("next_rtt_ms", d["next_rtt_ms"], 0.0, MAX_LINK_MS)
        if "next_mbps" in d:
            values["next_mbps"] = _checked_links("next_mbps", d["next_mbps"], MIN_LINK_MBPS, MAX_LINK_MBPS)
        values["adapters"] = _adapter_names(d.get("adapters", []))
        return cls(**values)


MAX_BLOCKS = 1 << 16
MAX_ADAPTERS = 64  # adapter names one server may advertise
_INFO_REQUIRED = {"peer_id", "model_name", "model_hash", "start", "end"}
# name: (type, lowest, highest) - a number outside its range, NaN or inf marks the whole reply as a lie.
_INFO_FIELDS: dict[str, tuple[type, float, float]] = {
    "peer_id": (str, 1, 128), "model_name": (str, 0, 256), "model_hash": (str, 0, 128),
    "start": (int, 0, MAX_BLOCKS - 1), "end": (int, 1, MAX_BLOCKS),
    "state": (str, 1, 32), "dtype": (str, 1, 32), "quant": (str, 1, 16), "hidden_size": (int, 0, 1 << 20),
    "block_ms": (float, 1e-4, 1e6), "throughput": (float, 0.0, 1e9),
    "free_cache_tokens": (int, 0, 1 << 32), "active_sessions": (int, 0, 1 << 20),
    "max_sessions": (int, 0, 1 << 20), "version": (str, 1, 32), "reachability": (str, 1, 32),
    "nickname": (str, 0, NICKNAME_MAX), "model_blocks": (int, 0, MAX_BLOCKS),
}
REACHABILITIES = ("public", "private", "unknown")
QUANTIZATIONS = {q.value for q in Quantization}
MAX_RELAYS = 8  # circuit addresses one server may list
MAX_LINKS = 64  # next servers one server may report a round trip to
MAX_LINK_MS = 60_000.0
MIN_LINK_MBPS, MAX_LINK_MBPS = 0.01, 100_000.0  # 10 kbit/s to 100 Gbit/s: anything else is a lie


def _checked_list(name: str, value: Any, most: int, longest: int) -> list[str]:
    if not isinstance(value, list) or len(value) > most:
        raise ProtocolError(f"bad server info: '{name}' must be a list of at most {most} strings")
    return [_checked(name, v, str, 1, longest) for v in value]


def _checked_links(name: str, value: Any, low: float, high: float) -> dict[str, float]:
    """A measure of the links to next servers: at most MAX_LINKS peer ids, each from `low` to `high`."""
    if not isinstance(value, dict) or len(value) > MAX_LINKS:
        raise ProtocolError(f"bad server info: '{name}' must be a map of at most {MAX_LINKS} peer ids")
    return {_checked(name, k, str, 1, 128): _checked(name, v, float, low, high) for k, v in value.items()}


def _adapter_names(value: Any) -> list[str]:
    """The advertised adapter names: a list of at most MAX_ADAPTERS distinct names, or ProtocolError."""
    if not isinstance(value, list) or len(value) > MAX_ADAPTERS:
        raise ProtocolError(f"bad server info: 'adapters' must be a list of at most {MAX_ADAPTERS} names")
    for name in value:
        if not isinstance(name, str) or not ADAPTER_NAME.match(name):
            raise ProtocolError(f"bad server info: adapter name {str(name)[:70]!r} is not a name")
    if len(set(value)) != len(value):
        raise ProtocolError("bad server info: an adapter is advertised twice")
    return list(value)


def _checked(name: str, value: Any, kind: type, low: float, high: float) -> Any:
    """`value` as `kind` if it is one (an int counts as a float, a bool as nothing) and within
    [low, high] (for strings: its length)."""
    if kind is str:
        if not isinstance(value, str) or not low <= len(value) <= high:
            raise ProtocolError(f"bad server info: '{name}' must be a string of {low}-{high} characters")
        return value
    ok = isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        ok = ok or isinstance(value, float)
    if not ok or not math.isfinite(value) or not low <= value <= high:
        raise ProtocolError(f"bad server info: '{name}' must be {'an integer' if kind is int else 'a number'} "
                            f"from {low:g} to {high:g}, got {value!r:.40}")
    return kind(value)
