"""The conversation as text: past messages, and the reply growing token by token."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtGui import QColor, QFont, QTextBlockFormat, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextEdit, QWidget

from corolla.app.chat.history import Message

_SPEAKER = {"user": "You", "assistant": "Assistant", "system": "System"}
_COLOR = {"user": "#2a5db0", "assistant": "#2f7d4a", "system": "#777777"}
_NOTE = {"stopped": "stopped", "failed": "failed", "interrupted": "interrupted — the app closed while writing"}


class MessageView(QTextEdit):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setPlaceholderText("Ask something to start the conversation.")
        self._streaming = False

    @Slot(list)
    def show_messages(self, messages: list[Message]) -> None:
        self.clear()
        self._streaming = False
        for m in messages:
            self._add_header(m.role)
            self._add_text(m.content)
            if m.state in _NOTE:
                self._add_note(_NOTE[m.state])

    @Slot()
    def begin_reply(self) -> None:
        self._add_header("assistant")
        self._streaming = True

    @Slot(str)
    def append_text(self, text: str) -> None:
        """Append streamed text to the reply being written (keeps the view scrolled to the end)."""
        bar = self.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 4
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text, QTextCharFormat())
        if at_end:
            bar.setValue(bar.maximum())

    @Slot(str)
    def end_reply(self, state: str) -> None:
        self._streaming = False
        if state in _NOTE:
            self._add_note(_NOTE[state])

    @Slot(str)
    def add_user_message(self, text: str) -> None:
        self._add_header("user")
        self._add_text(text)

    def _add_header(self, role: str) -> None:
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        if not self.document().isEmpty():
            block = QTextBlockFormat()
            block.setTopMargin(10)
            cursor.insertBlock(block)
        fmt = QTextCharFormat()
        fmt.setFontWeight(QFont.Weight.Bold)
        fmt.setForeground(QColor(_COLOR.get(role, "#000000")))
        cursor.insertText(_SPEAKER.get(role, role), fmt)
        cursor.insertBlock(QTextBlockFormat())
        self.setTextCursor(cursor)

    def _add_text(self, text: str) -> None:
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text, QTextCharFormat())

    def _add_note(self, note: str) -> None:
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        fmt = QTextCharFormat()
        fmt.setFontItalic(True)
        fmt.setForeground(QColor("#a05a00"))
        cursor.insertText(f"  [{note}]", fmt)
