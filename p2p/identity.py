"""A peer's persistent identity: an Ed25519 key kept in a file, so the peer id survives restarts."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import platformdirs
from filelock import FileLock, Timeout
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair

from corolla.p2p.errors import SwarmError

SEED_BYTES = 32


EPHEMERAL = "ephemeral"  # as an identity path: a fresh key for this run only, written nowhere
_held: list[FileLock] = []  # the locks of the identities this process uses, held until it exits


def identity_dir() -> Path:
    """This installation's peer keys (COROLLA_DATA_DIR/identity when that is set)."""
    base = os.environ.get("COROLLA_DATA_DIR") or platformdirs.user_data_dir("corolla", appauthor=False)
    return Path(base) / "identity"


def claim_identity_path(role: str, directory: Path | None = None) -> Path:
    """This installation's key file for `role` ("server", "bootstrap"), the same whatever the port.

    A second peer of the same role running on this machine at the same time gets the next free
    key (role-2.key, ...): each file is locked by the process using it."""
    directory = directory or identity_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = directory / (f"{role}.key" if n == 1 else f"{role}-{n}.key")
        lock = FileLock(str(path) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        _held.append(lock)
        return path
    raise SwarmError(f"every {role} identity in {directory} is in use")


def identity_key(path: Path | None, role: str) -> KeyPair:
    """The peer's key: from `path`; a fresh one for "ephemeral"; else this installation's for `role`."""
    if path is not None and str(path) == EPHEMERAL:
        return create_new_key_pair(secrets.token_bytes(SEED_BYTES))
    return load_or_create_identity(path or claim_identity_path(role))


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
