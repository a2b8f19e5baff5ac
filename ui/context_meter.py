"""How much of the model's context the conversation uses (tokens used / context length)."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QProgressBar, QWidget


class ContextMeter(QProgressBar):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(0, 1)
        self.setValue(0)
        self.setFormat("context: –")
        self.used = 0
        self.limit = 0

    @Slot(int, int)
    def show_usage(self, used: int, limit: int) -> None:
        self.used, self.limit = used, limit
        self.setRange(0, max(1, limit))
        self.setValue(min(used, max(1, limit)))
        self.setFormat(f"context: {used} / {limit} tokens")
        self.setToolTip("Tokens of the conversation (with the reply so far) out of the model's context length")
