"""Where the user types: the message box with Send, Stop and Regenerate.

Enter sends, Shift+Enter breaks the line. Editing a sent message puts it here; sending then replaces it.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget


class _MessageBox(QPlainTextEdit):
    submit = Signal()

    cancel = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submit.emit()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.cancel.emit()
            return
        super().keyPressEvent(event)


class Composer(QWidget):
    send_requested = Signal(str)
    edit_submitted = Signal(int, str)  # message id, new text
    stop_requested = Signal()
    regenerate_requested = Signal()
    draft_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.editor = _MessageBox(self)
        self.editor.setPlaceholderText("Message (Enter to send, Shift+Enter for a new line)")
        self.editing: int | None = None  # the id of the sent message being edited
        self.editing_label = QLabel("Editing a sent message: Enter resends it, Esc cancels", self)
        self.editing_label.hide()
        self.editor.cancel.connect(self.cancel_edit)
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
        row = QHBoxLayout()
        row.addWidget(self.editor, 1)
        row.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.editing_label)
        layout.addLayout(row)
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

    @Slot(int, str)
    def start_edit(self, message_id: int, text: str) -> None:
        self.editing = message_id
        self.editor.setPlainText(text)
        self.editing_label.show()
        self.editor.setFocus()

    @Slot()
    def cancel_edit(self) -> None:
        if self.editing is not None:
            self.editing = None
            self.editing_label.hide()
            self.editor.clear()

    @Slot()
    def _send(self) -> None:
        text = self.editor.toPlainText().strip()
        if not text or not self.send_button.isEnabled():
            return
        self.editor.clear()
        editing, self.editing = self.editing, None
        self.editing_label.hide()
        if editing is not None:
            self.edit_submitted.emit(editing, text)
        else:
            self.send_requested.emit(text)
