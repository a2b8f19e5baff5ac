"""Small records peers exchange: which blocks a server holds and how it is doing."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from corolla.p2p.errors import ProtocolError

PROTOCOL_VERSION = "1.0.0"
INFO_PROTOCOL = f"/corolla/info/{PROTOCOL_VERSION}"
INFERENCE_PROTOCOL = f"/corolla/inference/{PROTOCOL_VERSION}"
FORWARD_PROTOCOL = f"/corolla/forward/{PROTOCOL_VERSION}"
BACKWARD_PROTOCOL = f"/corolla/backward/{PROTOCOL_VERSION}"  # training: p2p/backward.py

ONLINE = "online"
LEAVING = "leaving"


@dataclass(frozen=True, order=True)
class BlockRange:
    """Blocks [start, end) of a model."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (0 <= self.start < self.end):
            raise ValueError(f"bad block range {self.start}:{self.end}: need 0 <= start < end")

    def __len__(self) -> int:
        return self.end - self.start

    def __contains__(self, block: object) -> bool:
        return isinstance(block, int) and self.start <= block < self.end

    def __str__(self) -> str:
        return f"{self.start}:{self.end}"

    @classmethod
    def parse(cls, text: str) -> BlockRange:
        """Parse 'A:B' (blocks A..B-1)."""
        try:
            a, b = text.split(":")
            return cls(int(a), int(b))
        except ValueError as exc:
            raise ValueError(f"bad block range {text!r}: expected A:B with 0 <= A < B") from exc


def format_blocks(blocks: list[int]) -> str:
    """[0,1,2,5,7,8] -> '0-2, 5, 7-8'."""
    out: list[str] = []
    for b in sorted(set(blocks)):
        if out and isinstance(out[-1], str) and _last(out[-1]) == b - 1:
            first = out[-1].split("-")[0]
            out[-1] = f"{first}-{b}"
        else:
            out.append(str(b))
    return ", ".join(out)


def _last(item: str) -> int:
    return int(item.split("-")[-1])


def model_key(model_name: str, model_hash: str) -> str:
    """DHT key under which every server of one checkpoint also announces (one lookup finds most
    servers; a DHT peer keeps at most 20 providers per key, so per-block keys fill the gaps)."""
    raw = f"corolla/{PROTOCOL_VERSION}/{model_name}/{model_hash}/servers"
    return hashlib.sha256(raw.encode()).hexdigest()


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
    hidden_size: int = 0
    block_ms: float = 1.0  # compute per block per decoded token
    throughput: float = 0.0  # decoded tokens/s through the whole span
    free_cache_tokens: int = 0
    active_sessions: int = 0
    max_sessions: int = 0
    version: str = PROTOCOL_VERSION
    rtt_ms: float = field(default=0.0, compare=False)  # measured by the client, not sent

    @property
    def blocks(self) -> BlockRange:
        return BlockRange(self.start, self.end)

    def to_wire(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rtt_ms")
        return d

    @classmethod
    def from_wire(cls, d: Any) -> ServerInfo:
        if not isinstance(d, dict):
            raise ProtocolError("server info must be a map")
        names = {f.name for f in fields(cls)} - {"rtt_ms"}
        try:
            info = cls(**{k: v for k, v in d.items() if k in names})
            BlockRange(int(info.start), int(info.end))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"bad server info: {exc}") from exc
        return info
