"""The tray's menu: Contribute (what it lends, its state, what it served), Open chat, Swarm status,
Settings, Quit."""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QMenu, QWidget

from corolla.app.contribute.state import ContributionState, Phase
from corolla.app.serve.stats import ServedStats


class TrayMenu(QMenu):
    contribute_toggled = Signal(bool)
    api_toggled = Signal(bool)
    open_chat_requested = Signal()
    swarm_requested = Signal()
    settings_requested = Signal()
    quit_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Corolla", parent)
        self.hardware = "GPU"  # what contributing lends: "GPU (NVIDIA H200)", "CPU (4 threads)"
        self._state = ContributionState()
        self.contribute_action = self.addAction("Contribute GPU: off")
        self.contribute_action.setCheckable(True)
        self.contribute_action.toggled.connect(self._toggled)
        self.stats_action = self.addAction("Served: nothing yet")
        self.stats_action.setEnabled(False)  # a line of information, not a command
        self.addSeparator()
        self.open_chat_action = self.addAction("Open chat")
        self.open_chat_action.triggered.connect(self.open_chat_requested)
        self.api_action = self.addAction("Local API (OpenAI-compatible): off")
        self.api_action.setCheckable(True)
        self.api_action.toggled.connect(self._api_toggled)
        self.swarm_action = self.addAction("Swarm status")
        self.swarm_action.triggered.connect(self.swarm_requested)
        self.settings_action = self.addAction("Settings…")
        self.settings_action.triggered.connect(self.settings_requested)
        self.addSeparator()
        self.quit_action = self.addAction("Quit")
        self.quit_action.triggered.connect(self.quit_requested)
        self._updating = False

    def show_hardware(self, hardware: str) -> None:
        """Name what contributing lends, e.g. "GPU (NVIDIA H200)" or "CPU (4 threads)"."""
        self.hardware = hardware
        self.show_contribution(self._state)

    @Slot(object)
    def show_stats(self, stats: ServedStats) -> None:
        """This installation's totals as a server, all runs together."""
        self.stats_action.setText(f"Served: {stats.describe()}" if stats.tokens or stats.seconds_online
                                  else "Served: nothing yet")

    def contribute_text(self, state: ContributionState) -> str:
        return f"Contribute {self.hardware}: {state.describe()}"

    @Slot(object)
    def show_contribution(self, state: ContributionState) -> None:
        """Reflect the server's state in the toggle's text and tick (without re-emitting)."""
        self._state = state
        self._updating = True
        try:
            self.contribute_action.setChecked(state.active or state.phase in (Phase.STOPPING, Phase.PAUSED))
            self.contribute_action.setText(self.contribute_text(state))
            self.contribute_action.setToolTip(state.error or state.describe())
        finally:
            self._updating = False

    @Slot(str)
    def show_api(self, state: str) -> None:
        self._updating = True
        try:
            self.api_action.setChecked(state != "off" and not state.startswith("error"))
            self.api_action.setText(f"Local API (OpenAI-compatible): {state}")
        finally:
            self._updating = False

    @Slot(bool)
    def _api_toggled(self, checked: bool) -> None:
        if not self._updating:
            self.api_toggled.emit(checked)

    @Slot(bool)
    def _toggled(self, checked: bool) -> None:
        if not self._updating:
            self.contribute_toggled.emit(checked)
