"""Applies the volunteer's rules (app/contribute/volunteer.py) to the contributed server: every
POLL_MS it reads the machine, pauses serving when a rule says so, and resumes when none does."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Slot

from corolla.app.contribute.state import Phase
from corolla.app.contribute.volunteer import MachineState, VolunteerRules, pause_reason, read_machine
from corolla.ui.bridge.contribution import ContributionController

POLL_MS = 5000


class VolunteerControl(QObject):
    def __init__(self, contribution: ContributionController, rules: VolunteerRules | None = None,
                 read: Callable[[], MachineState] | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.contribution = contribution
        self.rules = rules or VolunteerRules()
        self.read = read or (lambda: read_machine(self._own_pids()))  # tests give a simulated machine
        self.reason: str | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.check)
        self._timer.start()

    @Slot()
    def check(self) -> None:
        """Read the machine once and pause or resume the server to follow the rules."""
        state = self.contribution.state
        if not (state.active or self.contribution.paused):
            return  # not contributing: nothing to pause
        self.reason = pause_reason(self.rules, self.read())
        if self.reason and state.active:
            self.contribution.pause(self.reason)
        elif self.reason is None and state.phase is Phase.PAUSED:
            self.contribution.resume()

    def stop(self) -> None:
        self._timer.stop()

    def _own_pids(self) -> set[int]:
        import os

        pid = self.contribution.pid
        return {os.getpid(), *([pid] if pid else [])}
