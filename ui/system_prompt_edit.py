"""The conversation's system prompt (sent before the messages; kept per conversation)."""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QVBoxLayout, QWidget


class SystemPromptEdit(QWidget):
    changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.editor = QPlainTextEdit(self)
        self.editor.setPlaceholderText("System prompt (optional)")
        self.editor.setFixedHeight(70)
        self.editor.textChanged.connect(lambda: self.changed.emit(self.editor.toPlainText()))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>System prompt</b>", self))
        layout.addWidget(self.editor)

    def text(self) -> str:
        return self.editor.toPlainText()

    @Slot(str)
    def show_text(self, text: str) -> None:
        self.editor.blockSignals(True)
        self.editor.setPlainText(text)
        self.editor.blockSignals(False)
