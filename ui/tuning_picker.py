"""Next to the model: the tuned prompts (a `corolla finetune` file) and the LoRA adapter replies use.

The widget only asks (signals) and shows what it is told (slots); the chat backend checks a file
against the model and lists the adapters the swarm's servers offer.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QLabel,
    QPushButton,
    QToolButton,
    QWidget,
)

NO_ADAPTER = "none"


class TuningPicker(QWidget):
    tuned_requested = Signal(object)  # Path of a tuned-prompts file to use, or None for none
    adapter_requested = Signal(object)  # the adapter's name, or None for the base model
    adapter_picked = Signal(object)  # the same, when the user picked it (not when it stopped being offered)
    adapters_wanted = Signal()  # ask again which adapters the swarm offers

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tuned_name = QLabel("none", self)
        self.tuned_name.setToolTip("Soft prompts trained with `corolla finetune`, put before every reply's prompt")
        self.choose = QPushButton("Choose…", self)
        self.choose.setToolTip("Use a tuned-prompts file (.safetensors) made for this model")
        self.clear = QToolButton(self)
        self.clear.setText("✕")
        self.clear.setToolTip("Use no tuned prompts")
        self.clear.setEnabled(False)
        self.adapter = QComboBox(self)
        self.adapter.addItem(NO_ADAPTER)
        self.refresh = QToolButton(self)
        self.refresh.setText("↻")
        self.refresh.setToolTip("Ask the swarm again which adapters its servers offer")
        self.problem = QLabel(self)
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #c0392b;")
        self.problem.hide()
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(QLabel("Tuned prompts:", self), 0, 0)
        grid.addWidget(self.tuned_name, 0, 1)
        grid.addWidget(self.choose, 0, 2)
        grid.addWidget(self.clear, 0, 3)
        grid.addWidget(QLabel("Adapter:", self), 1, 0)
        grid.addWidget(self.adapter, 1, 1, 1, 2)
        grid.addWidget(self.refresh, 1, 3)
        grid.addWidget(self.problem, 2, 0, 1, 4)
        grid.setColumnStretch(1, 1)
        self.remembered: str | None = None  # the adapter chosen last time: picked again once it is offered
        self.show_adapters([])
        self.choose.clicked.connect(self._ask_file)
        self.clear.clicked.connect(lambda: self.tuned_requested.emit(None))
        self.refresh.clicked.connect(self.adapters_wanted.emit)
        self.adapter.activated.connect(self._adapter_picked)

    @property
    def current_adapter(self) -> str | None:
        text = self.adapter.currentText()
        return None if text == NO_ADAPTER else text

    def _ask_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Tuned prompts for this model", "",
                                              "Tuned prompts (*.safetensors);;All files (*)")
        if path:
            self.tuned_requested.emit(Path(path))

    def _adapter_picked(self, index: int) -> None:
        self.remembered = None  # the user chose
        self.adapter_requested.emit(self.current_adapter)
        self.adapter_picked.emit(self.current_adapter)

    @Slot(object)
    def show_tuned(self, path: Path | None) -> None:
        """The tuned prompts replies now use (None: none)."""
        self.problem.hide()
        self.tuned_name.setText("none" if path is None else Path(path).name)
        self.tuned_name.setToolTip("" if path is None else str(path))
        self.clear.setEnabled(path is not None)

    @Slot(str)
    def show_refusal(self, why: str) -> None:
        """A tuned-prompts file was refused (the previous choice stays): say why."""
        self.problem.setText(why)
        self.problem.show()

    @Slot(list)
    def show_adapters(self, names: list[str]) -> None:
        """The adapters on offer. If the chosen one is no longer offered, replies go back to none until it is
        offered again."""
        current = self.current_adapter
        self.adapter.clear()
        self.adapter.addItems([NO_ADAPTER, *names])
        self.adapter.setEnabled(bool(names))
        self.adapter.setToolTip("A LoRA adapter the swarm's servers offer; only servers offering it are used"
                                if names else "No server of the swarm offers an adapter (corolla serve --adapter DIR)")
        if current in names:
            self.adapter.setCurrentText(current)
        elif current is not None:  # picked again when it is offered again
            self.remembered = current
            self.adapter_requested.emit(None)
        elif self.remembered in names:
            self.adapter.setCurrentText(self.remembered)
            self.remembered = None
            self.adapter_requested.emit(self.current_adapter)
