"""Private swarms: a pre-shared key (libp2p's private network, PSK v1) that every member holds.

Every connection is encrypted with the key (XSalsa20) below the secure channel, so a peer without it
cannot even complete the handshake. The file is the one go-libp2p and IPFS use:
`/key/swarm/psk/1.0.0/`, `/base16/`, then 64 hex digits.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from corolla.p2p.errors import SwarmError

HEADER = "/key/swarm/psk/1.0.0/"


class SwarmKeyError(SwarmError):
    """A swarm key file is missing or not in the expected format."""


def read_swarm_key(path: Path) -> str:
    """The key in `path` as 64 hex digits; SwarmKeyError naming what is wrong with the file."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="ascii").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SwarmKeyError(f"cannot read swarm key {path}: {exc}") from None
    if len(lines) != 3 or lines[0] != HEADER or lines[1] != "/base16/":
        raise SwarmKeyError(f"{path} is not a swarm key: expected the lines {HEADER}, /base16/ and 64 hex digits")
    key = lines[2].lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise SwarmKeyError(f"{path}: the key must be 64 hex digits (32 bytes)")
    return key


def write_swarm_key(path: Path) -> str:
    """Create a new random swarm key in `path` (readable by its owner only); return it."""
    key = secrets.token_hex(32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{HEADER}\n/base16/\n{key}\n")
    return key
