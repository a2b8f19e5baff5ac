"""The chat's model selector: the models the swarm serves, by the names `corolla model info` prints."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from corolla.app.swarm.catalog import SwarmModel


class ModelSelector(QWidget):
    chosen = Signal(object)  # SwarmModel the user picked
    refresh_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.combo = QComboBox(self)
        self.combo.setPlaceholderText("Looking for the swarm's models…")
        self.combo.setToolTip("Models the swarm serves; the next reply comes from the one chosen")
        self.refresh_button = QToolButton(self)
        self.refresh_button.setText("⟳")
        self.refresh_button.setToolTip("Ask the swarm again")
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.status.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.models: list[SwarmModel] = []
        self.current = ""  # the name of the model the chat uses
        self.combo.activated.connect(self._activated)
        self.refresh_button.clicked.connect(self.refresh_requested)

    @Slot(list)
    def show_models(self, models: list[SwarmModel]) -> None:
        """List `models`; those not fully served are greyed (choosing one says why it cannot be used)."""
        self.models = list(models)
        self.combo.clear()
        for model in self.models:
            self.combo.addItem(model.describe(), model)
            if not model.fully_served:
                self.combo.setItemData(self.combo.count() - 1, QColor("#888888"), Qt.ItemDataRole.ForegroundRole)
        if not self.models:
            self.combo.setPlaceholderText("The swarm serves no model right now")
        self.set_current(self.current)

    @Slot(str)
    def set_current(self, name: str) -> None:
        """Show `name` as the model in use (without choosing it again)."""
        self.current = name
        for i, model in enumerate(self.models):
            if model.name == name:
                self.combo.setCurrentIndex(i)
                return
        self.combo.setCurrentIndex(-1)

    @Slot(str, bool)
    def show_status(self, text: str, ok: bool) -> None:
        """What came of the last choice: the model now used, or plainly why not."""
        self.status.setText(text)
        self.status.setStyleSheet("" if ok else "color:#9b1c1c")
        self.status.show()
        if not ok:
            self.set_current(self.current)

    @Slot(str)
    def show_failure(self, text: str) -> None:
        """The swarm could not be asked."""
        self.show_status(f"Cannot list the swarm's models: {text}", False)

    def choose(self, name: str) -> None:
        """Choose the model called `name`, as a click on it would."""
        for i, model in enumerate(self.models):
            if model.name == name:
                self.combo.setCurrentIndex(i)
                self._activated(i)
                return
        raise KeyError(f"the swarm serves no model called {name!r}")

    def _activated(self, index: int) -> None:
        if 0 <= index < len(self.models):
            self.chosen.emit(self.models[index])
