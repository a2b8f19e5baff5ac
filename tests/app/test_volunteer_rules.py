"""The volunteer's rules: when a lent machine pauses serving, and why (in words for the tray)."""

from corolla.app.contribute.volunteer import MachineState, VolunteerRules, pause_reason, read_machine


def test_each_rule_pauses_with_its_reason():
    rules = VolunteerRules(gpu_busy_percent=50, pause_for_programs=("Cyberpunk2077.exe",), idle_minutes=5)
    idle = 600.0
    assert pause_reason(rules, MachineState(idle_seconds=idle)) is None
    assert pause_reason(rules, MachineState(on_battery=True, idle_seconds=idle)) == "the computer is on battery"
    assert pause_reason(rules, MachineState(programs=frozenset({"cyberpunk2077.exe"}), idle_seconds=idle)) == \
        "cyberpunk2077.exe is running"
    assert pause_reason(rules, MachineState(other_gpu_percent=80, idle_seconds=idle)) == \
        "another program is using the GPU (80%)"
    assert pause_reason(rules, MachineState(other_gpu_percent=20, idle_seconds=idle)) is None
    assert pause_reason(rules, MachineState(idle_seconds=30)) == \
        "waiting until the computer has been idle for 5 min"
    relaxed = VolunteerRules(pause_when_gpu_busy=False, pause_on_battery=False)
    assert pause_reason(relaxed, MachineState(other_gpu_percent=99, on_battery=True)) is None


def test_this_machine_can_be_read():
    machine = read_machine()
    assert "python" in " ".join(machine.programs) or machine.programs == frozenset()
    assert isinstance(machine.on_battery, bool)
