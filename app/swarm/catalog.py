"""The models a swarm serves, for the chat's model selector, and the copies of them on this computer.

A client needs a model's own files (tokenizer, embeddings, LM head) to chat with it: the swarm runs
only the blocks. So a model can be chosen when the swarm serves every block of it and a folder here
holds the same checkpoint (same name and hash, as `corolla model info` prints them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import trio

from corolla.app.paths import data_dir
from corolla.core.errors import CorollaError
from corolla.p2p.client import request_info
from corolla.p2p.discovery import find_any_servers
from corolla.p2p.errors import PeerUnavailableError, ProtocolError, RemoteError
from corolla.p2p.host import Peer
from corolla.p2p.names import format_blocks
from corolla.p2p.records import ONLINE, ServerInfo

log = logging.getLogger(__name__)

MODELS_FOLDER = "models"  # in the data dir: model folders put there can be chosen in the chat


@dataclass(frozen=True)
class SwarmModel:
    """One checkpoint the swarm serves: its name and hash, how many blocks it has, who serves it."""

    name: str
    hash: str
    num_blocks: int
    servers: tuple[ServerInfo, ...]

    def missing(self) -> list[int]:
        """Blocks no online server holds."""
        held = {b for s in self.servers if s.state == ONLINE for b in range(s.start, s.end)}
        return [b for b in range(self.num_blocks) if b not in held]

    @property
    def fully_served(self) -> bool:
        return not self.missing()

    def describe(self) -> str:
        """One line for people: 'SmolLM2-135M-Instruct — 30 blocks, 3 servers' or what is missing."""
        n = len(self.servers)
        if not self.fully_served:
            return f"{self.name} — not fully served (no server holds blocks {format_blocks(self.missing())})"
        return f"{self.name} — {self.num_blocks} blocks, {n} server{'s' if n != 1 else ''}"


def group_models(servers: Iterable[ServerInfo]) -> list[SwarmModel]:
    """The servers' answers as models, by name then hash."""
    by_model: dict[tuple[str, str], list[ServerInfo]] = {}
    for s in servers:
        by_model.setdefault((s.model_name, s.model_hash), []).append(s)
    models = []
    for (name, digest), group in by_model.items():
        # a server that does not say the model's size still shows how far the model reaches
        blocks = max(max(s.model_blocks for s in group), max(s.end for s in group))
        models.append(SwarmModel(name, digest, blocks, tuple(sorted(group, key=lambda s: (s.start, s.peer_id)))))
    return sorted(models, key=lambda m: (m.name.lower(), m.hash))


async def swarm_models(peer: Peer) -> list[SwarmModel]:
    """Every model whose servers announced in the directory and answered now."""
    answers: list[ServerInfo] = []

    async def ask(pid) -> None:
        try:
            answers.append(await request_info(peer, pid))
        except (PeerUnavailableError, RemoteError, ProtocolError) as exc:
            log.debug("server %s did not answer: %s", pid, exc)

    async with trio.open_nursery() as nursery:
        for pid in await find_any_servers(peer):
            nursery.start_soon(ask, pid)
    return group_models(answers)


def model_folders(configured: Iterable[str]) -> list[Path]:
    """Folders here that may hold a model: the configured ones ('default' or paths; hub ids are not
    downloaded here), the data dir's models/ folder, and the hub cache's snapshots."""
    from corolla.core.model import DEFAULT, resolve_model

    found: list[Path] = []
    for name in configured:
        if name == DEFAULT or Path(name).expanduser().exists():
            try:
                found.append(resolve_model(name, progress=False))
            except CorollaError as exc:
                log.debug("model %s: %s", name, exc)
    library = data_dir() / MODELS_FOLDER
    if library.is_dir():
        found += sorted(p for p in library.iterdir() if (p / "config.json").is_file())
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            found += [r.snapshot_path for r in repo.revisions if (r.snapshot_path / "config.json").is_file()]
    except Exception as exc:  # noqa: BLE001 - no cache, an unreadable one: neither stops the chat
        log.debug("hub cache: %s", exc)
    return found


def local_copies(folders: Iterable[Path]) -> dict[tuple[str, str], Path]:
    """(name, hash) -> folder, for the folders that hold a model Corolla can read (first one wins)."""
    from corolla.core.model import ModelInfo

    copies: dict[tuple[str, str], Path] = {}
    for folder in folders:
        try:
            info = ModelInfo.load(folder)
        except Exception as exc:  # noqa: BLE001 - a broken or foreign folder is skipped, not fatal
            log.debug("%s is not a usable model: %s", folder, exc)
            continue
        copies.setdefault((info.name, info.hash), folder)
    return copies


def choose(model: SwarmModel, copies: dict[tuple[str, str], Path]) -> tuple[Path | None, str]:
    """The folder to chat with `model` and a sentence saying so, or None and why it cannot be used."""
    if not model.fully_served:
        return None, (f"{model.name} is not fully served: no server holds blocks {format_blocks(model.missing())}. "
                      "The chat keeps its model.")
    path = copies.get((model.name, model.hash))
    if path is None:
        return None, (f"{model.name} is served, but this computer has no copy of it (the chat needs its "
                      f"tokenizer and head): put its folder in {data_dir() / MODELS_FOLDER} or name it in "
                      "Settings. The chat keeps its model.")
    return path, f"The next reply comes from {model.name}."
