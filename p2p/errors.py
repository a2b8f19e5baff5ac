"""Typed errors of the swarm layer; each message says what went wrong and, where possible, what to do."""

from __future__ import annotations

from corolla.core.errors import CorollaError
from corolla.p2p.blocks import format_blocks
from corolla.p2p.names import short_id


class SwarmError(CorollaError):
    """Base of every networking error Corolla raises on purpose."""


class BadAddressError(SwarmError):
    """A multiaddr given by the user cannot be parsed or lacks the /p2p/<peer id> part."""


class ProtocolError(SwarmError):
    """A message broke the wire format (bad header, unknown dtype, size over a limit)."""


class MessageTooLargeError(ProtocolError):
    """A message announced more bytes than the receiver accepts."""


class RemoteError(SwarmError):
    """The other side answered with an error reply; `code` names the kind of problem."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PeerUnavailableError(SwarmError):
    """A peer could not be reached, hung past a timeout, or dropped the connection."""

    def __init__(self, peer_id: str, reason: str) -> None:
        super().__init__(f"peer {short_id(peer_id)} unavailable: {reason}")
        self.peer_id = peer_id
        self.reason = reason


class NoRouteError(SwarmError):
    """No live server covers some blocks of the model."""

    def __init__(self, missing: list[int], model: str) -> None:
        super().__init__(
            f"no live server serves blocks {format_blocks(missing)} of {model}; "
            "start a server for them (corolla serve --blocks A:B) or wait for one to join"
        )
        self.missing = missing


class ServersFullError(NoRouteError):
    """Live servers hold the blocks, but every one of them is full (sessions or cache)."""

    def __init__(self, missing: list[int], model: str) -> None:
        SwarmError.__init__(
            self, f"the servers holding blocks {format_blocks(missing)} of {model} are full (too many sessions "
            "or no free attention cache); wait, ask for fewer tokens, or start another server for them")
        self.missing = missing


class AdapterNotOfferedError(SwarmError):
    """No live server of the model offers the LoRA adapter a session asked for."""


class BlockRangeError(SwarmError):
    """A request names blocks the server does not hold."""
