"""User settings: what the "Contribute GPU" toggle serves, which swarm to join, chat defaults.

Stored as JSON in the user config dir. Every value is checked; an invalid value is refused with a
`SettingsError` naming the setting, never silently replaced by a default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corolla.app.errors import SettingsError
from corolla.app.paths import config_dir
from corolla.core.generation import CHAT_SAMPLING, SamplingError, SamplingParams
from corolla.p2p.names import NicknameError, check_nickname

SETTINGS_FILE = "settings.json"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_BLOCKS = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True)
class Settings:
    """Everything the app remembers across restarts."""

    initial_peers: tuple[str, ...] = ()
    model: str = "default"
    device: str = "auto"
    blocks: str = ""  # "A:B" to serve exactly those blocks; "" lets num_blocks decide
    num_blocks: int = 8
    port: int = 0  # 0: any free port
    nickname: str = ""  # shown to others beside the contributed server's short id
    contribute: bool = False
    max_gpu_memory: float = 0.0  # GiB the contributed server may use (weights and cache); 0: no cap
    cpu_threads: int = 0  # threads a CPU server computes with; 0: as many as torch chooses
    start_at_login: bool = False  # the OS starts the tray app at login (app/contribute/autostart.py)
    system_prompt: str = "You are a helpful assistant."
    welcomed: bool = False  # the first-run welcome was answered
    chat_model: str = ""  # the model folder last chosen in the chat's selector; "": the model above
    tuned: str = ""  # the tuned-prompts file the chat's replies use; "": none
    adapter: str = ""  # the LoRA adapter the chat's replies use, once the swarm offers it; "": none
    sampling: SamplingParams = CHAT_SAMPLING

    def validated(self) -> Settings:
        """Return self if every value is acceptable, else raise SettingsError."""
        for peer in self.initial_peers:
            check_multiaddr(peer)
        _check(isinstance(self.model, str) and self.model.strip() != "", "model", self.model,
               "must name a model (\"default\", a folder or a hub id)")
        _check(isinstance(self.device, str) and bool(_DEVICE.match(self.device)), "device", self.device,
               "must be auto, cpu, mps, cuda or cuda:N")
        if self.blocks:
            block_range(self.blocks)
        _check(_is_int(self.num_blocks) and 1 <= self.num_blocks <= 1000, "number of blocks",
               self.num_blocks, "must be a whole number from 1 to 1000")
        _check(_is_int(self.port) and 0 <= self.port <= 65535, "port", self.port,
               "must be from 0 (any) to 65535")
        try:
            check_nickname(self.nickname)
        except NicknameError as exc:
            raise SettingsError(f"server nickname {self.nickname!r}: {exc}") from None
        _check(isinstance(self.contribute, bool), "contribute", self.contribute, "must be true or false")
        _check(_is_number(self.max_gpu_memory) and 0 <= self.max_gpu_memory <= 100_000, "memory cap",
               self.max_gpu_memory, "must be a number of GiB from 0 (no cap) up")
        _check(not (self.max_gpu_memory and self.blocks), "memory cap", self.max_gpu_memory,
               "chooses how many blocks to serve: leave Blocks empty to use it, or set the cap to 0")
        _check(_is_int(self.cpu_threads) and 0 <= self.cpu_threads <= 1024, "CPU threads", self.cpu_threads,
               "must be a whole number from 0 (let the computer choose) to 1024")
        _check(isinstance(self.start_at_login, bool), "start at login", self.start_at_login,
               "must be true or false")
        _check(isinstance(self.welcomed, bool), "welcomed", self.welcomed, "must be true or false")
        _check(isinstance(self.system_prompt, str), "system prompt", self.system_prompt, "must be text")
        for name in ("chat_model", "tuned", "adapter"):
            _check(isinstance(getattr(self, name), str), name.replace("_", " "), getattr(self, name), "must be text")
        try:
            self.sampling.validated()
        except SamplingError as exc:
            raise SettingsError(str(exc)) from None
        return self

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with `changes` applied."""
        return dataclasses.replace(self, **changes).validated()

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["initial_peers"] = list(self.initial_peers)
        return d

    @classmethod
    def from_json(cls, data: Any) -> Settings:
        if not isinstance(data, dict):
            raise SettingsError("settings must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
        data = dict(data)
        sampling = data.pop("sampling", {})
        if not isinstance(sampling, dict):
            raise SettingsError("sampling must be a JSON object")
        s_known = {f.name for f in dataclasses.fields(SamplingParams)}
        if set(sampling) - s_known:
            raise SettingsError(f"unknown sampling setting(s): {', '.join(sorted(set(sampling) - s_known))}")
        peers = data.pop("initial_peers", [])
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise SettingsError("initial peers must be a list of multiaddresses")
        if isinstance(sampling.get("stop"), list):
            sampling["stop"] = tuple(sampling["stop"])
        return cls(initial_peers=tuple(peers), sampling=SamplingParams(**{**dataclasses.asdict(CHAT_SAMPLING),
                                                                         **sampling}), **data).validated()


def default_bootstrap_peers() -> tuple[str, ...]:
    """The public swarm's bootstrap peers shipped with Corolla (resources/bootstrap.txt)."""
    from corolla.resources import files

    lines = files().joinpath("bootstrap.txt").read_text(encoding="utf-8").splitlines()
    return tuple(check_multiaddr(line.strip()) for line in lines if line.strip() and not line.startswith("#"))


def block_range(text: str) -> tuple[int, int]:
    """Parse "A:B" (blocks A up to but not including B) or raise SettingsError."""
    m = _BLOCKS.match(text.strip())
    if not m or int(m.group(1)) >= int(m.group(2)):
        raise SettingsError(f"blocks {text!r}: write START:END with START < END, for example 0:10")
    return int(m.group(1)), int(m.group(2))


def check_multiaddr(text: str) -> str:
    """Return `text` if it is a multiaddress that names a peer (…/p2p/<id>), else raise SettingsError."""
    import multiaddr  # ships with libp2p; imported here to keep `import app.settings` light

    try:
        addr = multiaddr.Multiaddr(text)
    except Exception as exc:  # noqa: BLE001 - the library raises several unrelated types for bad input
        raise SettingsError(f"initial peer {text!r} is not a multiaddress ({exc})") from None
    if "p2p" not in [p.name for p in addr.protocols()]:
        raise SettingsError(f"initial peer {text!r} must end with /p2p/<peer id>")
    return text


def load(path: Path | None = None) -> Settings:
    """Read the settings file; defaults if there is none; SettingsError if it is invalid."""
    path = path or config_dir() / SETTINGS_FILE
    if not path.exists():
        return Settings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from None
    try:
        return Settings.from_json(data)
    except TypeError as exc:
        raise SettingsError(f"{path}: {exc}") from None


def save(settings: Settings, path: Path | None = None) -> Path:
    """Validate and write atomically (a crash leaves the old file or the new one, never half)."""
    settings.validated()
    path = path or config_dir() / SETTINGS_FILE
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(settings.to_json(), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise SettingsError(f"{name} {value!r} {why}")
