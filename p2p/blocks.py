"""Block ranges of a model (nothing of ours imported but names.py: errors use it)."""

from __future__ import annotations

from dataclasses import dataclass

from corolla.p2p.names import format_blocks

__all__ = ["BlockRange", "format_blocks"]


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
