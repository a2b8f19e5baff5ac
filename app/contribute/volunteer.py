"""When a volunteer's machine lends itself: pause while a game or another program needs the GPU, on
battery, or until the machine has been idle a while — what BOINC and Folding@home users expect.

`pause_reason(rules, machine)` decides from a reading of the machine (`MachineState`), which
`read_machine()` takes from NVML (nvidia-ml-py, where installed), the process list and the battery
(psutil, where installed). Qt-free: ui/bridge/volunteer.py polls it and pauses the server, which
drains its sessions first so that clients move without errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class VolunteerRules:
    pause_when_gpu_busy: bool = True
    gpu_busy_percent: int = 50  # another program's GPU use at or above this pauses serving
    pause_for_programs: tuple[str, ...] = ()  # process names (games), case-insensitive
    idle_minutes: int = 0  # serve only after this long without keyboard or mouse input; 0: any time
    pause_on_battery: bool = True


@dataclass(frozen=True)
class MachineState:
    other_gpu_percent: float | None = None  # GPU use by programs other than our server; None: unknown
    programs: frozenset[str] = field(default_factory=frozenset)  # running process names, lower case
    idle_seconds: float | None = None  # since the last input; None: unknown
    on_battery: bool = False


def pause_reason(rules: VolunteerRules, machine: MachineState) -> str | None:
    """Why serving should pause now, in words for the tray; None when it may run."""
    if rules.pause_on_battery and machine.on_battery:
        return "the computer is on battery"
    wanted = {p.lower() for p in rules.pause_for_programs}
    running = sorted(wanted & machine.programs)
    if running:
        return f"{running[0]} is running"
    if (rules.pause_when_gpu_busy and machine.other_gpu_percent is not None
            and machine.other_gpu_percent >= rules.gpu_busy_percent):
        return f"another program is using the GPU ({machine.other_gpu_percent:.0f}%)"
    if rules.idle_minutes and machine.idle_seconds is not None and machine.idle_seconds < rules.idle_minutes * 60:
        return f"waiting until the computer has been idle for {rules.idle_minutes} min"
    return None


def read_machine(own_pids: set[int] | None = None) -> MachineState:
    """What can be read on this machine without extra permissions; unknown parts stay None."""
    own = own_pids or {os.getpid()}
    return MachineState(other_gpu_percent=_other_gpu_percent(own), programs=_programs(),
                        on_battery=_on_battery())


def _other_gpu_percent(own_pids: set[int]) -> float | None:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            busiest = 0.0
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                try:
                    samples = pynvml.nvmlDeviceGetProcessUtilization(handle, 0)
                except pynvml.NVMLError:
                    continue
                busiest = max(busiest, sum(s.smUtil for s in samples if s.pid not in own_pids))
            return busiest
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no permission: unknown, not an error for the user
        return None


def _programs() -> frozenset[str]:
    try:
        import psutil
    except ImportError:
        return frozenset()
    names = set()
    for proc in psutil.process_iter(["name"]):
        name = proc.info.get("name")
        if name:
            names.add(name.lower())
    return frozenset(names)


def _on_battery() -> bool:
    try:
        import psutil

        battery = psutil.sensors_battery()
    except (ImportError, AttributeError, RuntimeError, OSError):
        return False
    return battery is not None and not battery.power_plugged
