"""The tray's menu: Contribute GPU (with its state), Open chat, Swarm status, Settings, Quit."""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QMenu, QWidget

from corolla.app.contribute.state import ContributionState, Phase


class TrayMenu(QMenu):
    contribute_toggled = Signal(bool)
    api_toggled = Signal(bool)
    open_chat_requested = Signal()
    swarm_requested = Signal()
    settings_requested = Signal()
    quit_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Corolla", parent)
        self.contribute_action = self.addAction("Contribute GPU: off")
        self.contribute_action.setCheckable(True)
        self.contribute_action.toggled.connect(self._toggled)
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

    @Slot(object)
    def show_contribution(self, state: ContributionState) -> None:
        """Reflect the server's state in the toggle's text and tick (without re-emitting)."""
        self._updating = True
        try:
            self.contribute_action.setChecked(state.active or state.phase is Phase.STOPPING)
            self.contribute_action.setText(f"Contribute GPU: {state.describe()}")
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
