"""Where the user types: the message box with Send, Stop and Regenerate (Ctrl+Enter sends)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QHBoxLayout, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget


class _MessageBox(QPlainTextEdit):
    submit = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.submit.emit()
            return
        super().keyPressEvent(event)


class Composer(QWidget):
    send_requested = Signal(str)
    stop_requested = Signal()
    regenerate_requested = Signal()
    draft_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.editor = _MessageBox(self)
        self.editor.setPlaceholderText("Message (Ctrl+Enter to send)")
        self.editor.setFixedHeight(80)
        self.editor.submit.connect(self._send)
        self.editor.textChanged.connect(lambda: self.draft_changed.emit(self.editor.toPlainText()))
        self.send_button = QPushButton("Send", self)
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self._send)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.clicked.connect(self.stop_requested)
        self.regenerate_button = QPushButton("Regenerate", self)
        self.regenerate_button.clicked.connect(self.regenerate_requested)
        buttons = QVBoxLayout()
        for b in (self.send_button, self.stop_button, self.regenerate_button):
            buttons.addWidget(b)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.editor, 1)
        layout.addLayout(buttons)
        self.set_busy(False)

    def set_draft(self, text: str) -> None:
        self.editor.blockSignals(True)
        self.editor.setPlainText(text)
        self.editor.blockSignals(False)

    @Slot(bool)
    def set_busy(self, busy: bool) -> None:
        """While a reply streams: Stop is enabled, Send and Regenerate are not."""
        self.send_button.setEnabled(not busy)
        self.regenerate_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)

    @Slot()
    def _send(self) -> None:
        text = self.editor.toPlainText().strip()
        if not text or not self.send_button.isEnabled():
            return
        self.editor.clear()
        self.send_requested.emit(text)
