"""A peer's persistent identity: an Ed25519 key kept in a file, so the peer id survives restarts."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import platformdirs
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair

from corolla.p2p.errors import SwarmError

SEED_BYTES = 32


def default_identity_path(role: str, port: int) -> Path:
    """Where a peer of this role keeps its key; the port tells apart several peers on one machine."""
    name = f"{role}.key" if port == 0 else f"{role}-{port}.key"
    return Path(platformdirs.user_data_dir("corolla", appauthor=False)) / "identity" / name


def load_or_create_identity(path: Path) -> KeyPair:
    """Read the key seed at `path`, creating it (readable by the owner only) when missing."""
    if path.exists():
        seed = path.read_bytes()
        if len(seed) != SEED_BYTES:
            raise SwarmError(f"identity file {path} is damaged ({len(seed)} bytes, expected {SEED_BYTES}); "
                             "delete it to get a new peer id")
        return create_new_key_pair(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = secrets.token_bytes(SEED_BYTES)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
    os.replace(tmp, path)
    return create_new_key_pair(seed)
