"""What the "Contribute GPU" toggle shows, and the `corolla serve` arguments it starts with.

The server process reports itself on the status channel (app/serve/status.py); `apply_status` turns
each message into the next `ContributionState`: off / starting / serving blocks A–B, N sessions /
error and why. Qt-free: ui/bridge/contribution.py runs the process.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from corolla.app.paths import data_dir
from corolla.app.serve.stats import ServedStats, load_stats, stats_file
from corolla.app.serve.status import Event, ServerStatus
from corolla.app.settings import Settings, block_range
from corolla.p2p.names import blocks_text


class Phase(str, Enum):
    OFF = "off"
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"
    PAUSED = "paused"  # the volunteer's rules paused serving (a game runs, on battery, ...); resumes by itself
    ERROR = "error"


@dataclass(frozen=True)
class ContributionState:
    phase: Phase = Phase.OFF
    start: int | None = None  # first block served
    end: int | None = None  # one past the last block served
    sessions: int = 0
    error: str = ""
    peer_id: str = ""
    join_address: str = ""  # set when the server started a new swarm: where others join it

    @property
    def active(self) -> bool:
        return self.phase in (Phase.STARTING, Phase.SERVING)

    def describe(self) -> str:
        """What the tray shows, e.g. "serving blocks 0–9, 2 sessions"."""
        if self.phase is Phase.SERVING and self.start is not None and self.end is not None:
            n = self.sessions
            return f"serving {blocks_text(self.start, self.end)}, {n} session{'s' if n != 1 else ''}"
        if self.phase is Phase.STARTING and self.start is not None and self.end is not None:
            return f"starting (loading {blocks_text(self.start, self.end)})…"
        if self.phase is Phase.ERROR:
            return f"error: {self.error}" if self.error else "error"
        if self.phase is Phase.PAUSED:
            return f"paused: {self.error}" if self.error else "paused"
        return {Phase.OFF: "off", Phase.STARTING: "starting…", Phase.STOPPING: "stopping…"}.get(
            self.phase, self.phase.value
        )


_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b:?\s*")


def ended_words(crashed: bool, message: str = "") -> str:
    """Why the server stopped, as a sentence for the tray: never an exception name or an exit code.

    `crashed`: the process was ended by a signal (killed, or it crashed); `message`: what the server
    said on its status channel before it stopped, if anything.
    """
    why = _EXCEPTION.sub("", message.strip()).strip().rstrip(".")
    if why:
        return f"The server stopped: {why[0].upper()}{why[1:]}. Details are in the server log."
    if crashed:
        return "The server was stopped from outside or crashed. Turn Contribute on to start it again."
    return "The server stopped unexpectedly. Details are in the server log; turn Contribute on to try again."


def apply_status(state: ContributionState, status: ServerStatus) -> ContributionState:
    """The state after the server sent `status`."""
    if status.event is Event.LOADING:
        return dataclasses.replace(state, phase=Phase.STARTING, start=status.start, end=status.end)
    if status.event is Event.SERVING:
        return dataclasses.replace(state, phase=Phase.SERVING, start=status.start, end=status.end,
                                   sessions=status.sessions or 0, error="",
                                   peer_id=status.peer_id or state.peer_id,
                                   join_address=status.join_address or state.join_address)
    if status.event is Event.SESSIONS and state.phase is Phase.SERVING:
        return dataclasses.replace(state, sessions=status.sessions or 0)
    if status.event is Event.MOVING:
        return dataclasses.replace(state, phase=Phase.STARTING, start=status.start, end=status.end)
    if status.event is Event.ERROR:
        return dataclasses.replace(state, error=status.message)  # the phase changes when the process ends
    return state


def serving_device(device: str) -> str:
    """The device a server runs on for the Device setting: "auto" is the first CUDA GPU if there is one."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def lent_hardware(settings: Settings) -> str:
    """What contributing lends, for the tray: "GPU (NVIDIA H200)" or "CPU (4 threads)"."""
    device = serving_device(settings.device)
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":")[1]) if ":" in device else 0
        try:
            return f"GPU ({torch.cuda.get_device_name(index)})"
        except (RuntimeError, AssertionError, ValueError):  # torch's errors for a missing GPU index
            return f"GPU ({device})"
    if device == "mps":
        return "GPU (Apple)"
    import os

    threads = settings.cpu_threads or os.cpu_count() or 1
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"


def stats_from_status(status: ServerStatus) -> ServedStats:
    """The totals a STATS message carries."""
    return ServedStats(status.tokens_served or 0, status.sessions_served or 0, float(status.seconds_online or 0))


def saved_stats() -> ServedStats:
    """The contributed server's totals from earlier runs (its stats file, next to its key)."""
    return load_stats(stats_file(identity_file()))


def identity_file() -> Path:
    """The contributed server's key: its peer id stays the same across restarts."""
    return data_dir() / "identity" / "server.key"


def server_arguments(settings: Settings, identity: Path | None = None) -> list[str]:
    """The `corolla serve` arguments for these settings."""
    args = ["serve", "--model", settings.model, "--port", str(settings.port),
            "--identity", str(identity or identity_file())]
    if settings.blocks:
        start, end = block_range(settings.blocks)
        args += ["--blocks", f"{start}:{end}"]
    elif settings.max_gpu_memory:  # the cap sets the number of blocks: as many as fit in it
        args += ["--max-gpu-memory", f"{settings.max_gpu_memory:g}"]
    else:
        args += ["--num-blocks", str(settings.num_blocks)]
    args += ["--device", serving_device(settings.device)]
    if settings.cpu_threads:
        args += ["--threads", str(settings.cpu_threads)]
    if settings.nickname:
        args += ["--nickname", settings.nickname]
    if settings.initial_peers:
        args += ["--initial-peers", *settings.initial_peers]
    return args
