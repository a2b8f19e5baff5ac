"""The conversation as a rendered transcript: markdown and code blocks, copy and edit links, notices.

The transcript is a list of entries rendered together as Markdown (Qt's own renderer). A reply being
written is re-rendered at most every RENDER_MS, so a long conversation does not slow streaming.
Links in the transcript are actions: copy a message, copy a code block, edit a sent message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from PySide6.QtCore import QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QTextBrowser, QWidget

from corolla.app.chat.history import Message

RENDER_MS = 50
_SPEAKER = {"user": "You", "assistant": "Assistant", "system": "System"}
_NOTE = {"stopped": "stopped", "failed": "failed", "interrupted": "interrupted — the app closed while writing"}
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass
class Entry:
    kind: str  # "message" or "notice"
    text: str
    role: str = ""
    message_id: int | None = None
    state: str = "complete"
    stats: str = ""
    details: str = ""
    codes: list[str] = field(default_factory=list)


class MessageView(QTextBrowser):
    edit_requested = Signal(int, str)  # message id, its text

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setPlaceholderText("Ask something to start the conversation.")
        self.anchorClicked.connect(self._action)
        self.entries: list[Entry] = []
        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(RENDER_MS)
        self._render_timer.timeout.connect(self.render)

    @Slot(list)
    def show_messages(self, messages: list[Message]) -> None:
        self.entries = [Entry("message", m.content, m.role, m.id, m.state) for m in messages]
        self.render()

    @Slot()
    def begin_reply(self) -> None:
        self.entries.append(Entry("message", "", "assistant", state="streaming"))
        self.render()

    @Slot(str)
    def append_text(self, text: str) -> None:
        """Append streamed text to the reply being written."""
        reply = self._reply()
        if reply is not None:
            reply.text += text
            if not self._render_timer.isActive():
                self._render_timer.start()

    @Slot(str)
    def end_reply(self, state: str) -> None:
        reply = self._reply()
        if reply is not None:
            reply.state = state
        self.render()

    @Slot(str)
    def show_stats(self, stats: str) -> None:
        """Speed of the last reply (tokens/s, time to the first token), shown under it."""
        last = next((e for e in reversed(self.entries) if e.kind == "message" and e.role == "assistant"), None)
        if last is not None:
            last.stats = stats
            self.render()

    @Slot(str, int)
    def add_user_message(self, text: str, message_id: int | None = None) -> None:
        self.entries.append(Entry("message", text, "user", message_id))
        self.render()

    @Slot(str, str)
    def add_notice(self, text: str, details: str = "") -> None:
        """A short notice in the transcript (a reroute, a wait, a failure); `details` on hover."""
        self.entries.append(Entry("notice", text, details=details))
        self.render()

    def markdown(self) -> str:
        parts = []
        for i, e in enumerate(self.entries):
            if e.kind == "notice":
                parts.append(f"*⟳ {_escape(e.text)}*" + (f" [details](details:{i})" if e.details else ""))
                continue
            links = [f"[copy](copy:{i})"]
            if e.role == "user" and e.message_id is not None:
                links.append(f"[edit](edit:{i})")
            header = f"**{_SPEAKER.get(e.role, e.role)}** &nbsp; " + " · ".join(links)
            e.codes = [m.group(1) for m in _FENCE.finditer(e.text)]
            body = _FENCE.sub(_code_with_link(i), e.text) if e.codes else e.text
            note = f"\n\n*[{_NOTE[e.state]}]*" if e.state in _NOTE else ""
            stats = f"\n\n<small>{e.stats}</small>" if e.stats else ""
            parts.append(f"{header}\n\n{body}{note}{stats}")
        return "\n\n---\n\n".join(parts)

    def render(self) -> None:
        bar = self.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 4
        self.setMarkdown(self.markdown())
        if at_end:
            bar.setValue(bar.maximum())

    def _reply(self) -> Entry | None:
        """The reply being written: the last message, even when a notice (a reroute) came after it."""
        for entry in reversed(self.entries):
            if entry.kind == "message":
                return entry if entry.state == "streaming" else None
        return None

    @Slot(QUrl)
    def _action(self, url: QUrl) -> None:
        kind, _, where = url.toString().partition(":")
        try:
            index, _, code = where.partition(":")
            entry = self.entries[int(index)]
        except (ValueError, IndexError):
            return
        if kind == "copy":
            QGuiApplication.clipboard().setText(entry.text)
        elif kind == "code" and code.isdigit() and int(code) < len(entry.codes):
            QGuiApplication.clipboard().setText(entry.codes[int(code)])
        elif kind == "edit" and entry.message_id is not None:
            self.edit_requested.emit(entry.message_id, entry.text)
        elif kind == "details":
            self.setToolTip(entry.details)


def _code_with_link(index: int):
    counter = iter(range(1000))

    def replace(m: re.Match[str]) -> str:
        return f"{m.group(0)}\n\n[copy code](code:{index}:{next(counter)})"

    return replace


def _escape(text: str) -> str:
    return re.sub(r"([*_`\[\]])", r"\\\1", text)
