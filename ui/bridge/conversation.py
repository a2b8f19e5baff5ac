"""The chat's state: which conversation is open, and the reply being written into the history.

Ties the conversation store to the chat backend. What the user sends is stored before generation
starts; each piece of streamed text is stored before it is shown, so a crash never loses text that
was on screen.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from corolla.app.chat.history import ConversationStore, Message
from corolla.app.errors import ChatBackendError, HistoryError
from corolla.core.generation import SamplingParams
from corolla.ui.bridge.chat_backend import ChatBackend

DRAFT_MS = 300  # typed-but-unsent text is saved this long after the last keystroke


class ConversationController(QObject):
    conversations_changed = Signal(list, object)  # list[Conversation], current id or None
    opened = Signal(object, list)  # Conversation, list[Message]
    user_message_added = Signal(str, int)  # text, message id
    reply_started = Signal()
    reply_text = Signal(str)
    reply_finished = Signal(str)  # message state: complete / stopped / failed
    busy_changed = Signal(bool)
    error = Signal(str)

    def __init__(self, store: ConversationStore, backend: ChatBackend, sampling: SamplingParams,
                 default_system_prompt: str = "", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.backend = backend
        self.sampling = sampling
        self.default_system_prompt = default_system_prompt
        self.current: int | None = None
        self._reply: Message | None = None
        self._request: int | None = None
        self._draft_timer = QTimer(self)
        self._draft_timer.setSingleShot(True)
        self._draft_timer.setInterval(DRAFT_MS)
        self._draft_timer.timeout.connect(self._save_draft)
        self._draft: tuple[int, str] | None = None
        backend.token.connect(self._on_token)
        backend.finished.connect(self._on_finished)
        backend.failed.connect(self._on_failed)

    @property
    def busy(self) -> bool:
        return self._reply is not None

    # conversations
    @Slot()
    def start(self) -> None:
        """Show the stored conversations and open the current one, else the most recent, else a new one."""
        if self.current is not None:
            self.flush()
            self._emit_list()
            self.opened.emit(self.store.conversation(self.current), self.store.messages(self.current))
            return
        conversations = self.store.conversations()
        if conversations:
            self.open(conversations[0].id)
        else:
            self.new()

    @Slot()
    def new(self) -> None:
        c = self.store.create(system_prompt=self.default_system_prompt)
        self.open(c.id)

    @Slot(int)
    def open(self, conversation_id: int) -> None:
        if conversation_id == self.current:
            return
        if self.busy:  # the reply being written stays in its conversation, marked stopped
            self.backend.stop()
            self._finish("stopped")
        self._save_draft()
        self.current = conversation_id
        self._emit_list()
        self.opened.emit(self.store.conversation(conversation_id), self.store.messages(conversation_id))
        self.backend.measure(self._prompt(conversation_id))

    @Slot(int, str)
    def rename(self, conversation_id: int, title: str) -> None:
        try:
            self.store.rename(conversation_id, title)
        except HistoryError as exc:
            self.error.emit(str(exc))
        self._emit_list()

    @Slot(int)
    def delete(self, conversation_id: int) -> None:
        if conversation_id == self.current and self.busy:
            self.stop()
            self._finish("stopped")
        self.store.delete(conversation_id)
        if conversation_id == self.current:
            self.current = None
            self.start()
        else:
            self._emit_list()

    @Slot(str)
    def set_system_prompt(self, text: str) -> None:
        if self.current is not None:
            self.store.set_system_prompt(self.current, text)

    @Slot(object)
    def set_sampling(self, sampling: SamplingParams) -> None:
        self.sampling = sampling.validated()

    @Slot(str)
    def set_draft(self, text: str) -> None:
        if self.current is not None:
            self._draft = (self.current, text)
            self._draft_timer.start()

    # replies
    @Slot(str)
    def send(self, text: str) -> None:
        if self.current is None or self.busy or not text.strip():
            return
        cid = self.current
        message = self.store.add_message(cid, "user", text)
        self._draft = (cid, "")
        self._save_draft()
        if len(self.store.messages(cid)) == 1 and self.store.conversation(cid).title == "New conversation":
            self.store.rename(cid, _title_from(text))
        self._emit_list()
        self.user_message_added.emit(text, message.id)
        self._start_reply()

    @Slot(int, str)
    def edit(self, message_id: int, text: str) -> None:
        """Replace a sent message with `text` and answer it again: what followed it is dropped."""
        if self.current is None or self.busy or not text.strip():
            return
        messages = self.store.messages(self.current)
        at = next((i for i, m in enumerate(messages) if m.id == message_id and m.role == "user"), None)
        if at is None:
            self.error.emit("that message is no longer in this conversation")
            return
        for m in messages[at:]:
            self.store.delete_message(m.id)
        self.store.add_message(self.current, "user", text)
        self.opened.emit(self.store.conversation(self.current), self.store.messages(self.current))
        self._start_reply()

    def search(self, text: str) -> list[int]:
        """Conversations whose title or messages contain `text` (all of them for empty text)."""
        if not text.strip():
            return [c.id for c in self.store.conversations()]
        self.flush()
        return self.store.search(text.strip())

    def export(self, path, fmt: str):
        """Write the open conversation to `path` as markdown or json; the path written."""
        from corolla.app.chat.export import export

        if self.current is None:
            raise HistoryError("no conversation is open")
        return export(path, fmt, self.store.conversation(self.current), self.store.messages(self.current))

    @Slot()
    def regenerate(self) -> None:
        """Replace the last reply with a new one (or answer the last message if it has no reply)."""
        if self.current is None or self.busy:
            return
        messages = self.store.messages(self.current)
        if not messages:
            return
        if messages[-1].role == "assistant":
            self.store.delete_message(messages[-1].id)
            messages = messages[:-1]
        if not messages or messages[-1].role != "user":
            return
        self.opened.emit(self.store.conversation(self.current), messages)
        self._start_reply()

    @Slot()
    def stop(self) -> None:
        if self.busy:
            self.backend.stop()

    @Slot()
    def flush(self) -> None:
        """Kept for callers that wait for the disk: streamed text is stored as it arrives."""

    def close(self) -> None:
        """Before the window or app closes: store what is pending and stop generating."""
        self.flush()
        self._save_draft()
        if self.busy:
            self.backend.stop()
            self._finish("stopped")

    def _start_reply(self) -> None:
        if self.current is None:
            return
        prompt = self._prompt(self.current)
        self._reply = self.store.add_message(self.current, "assistant", "", state="streaming")
        try:
            self._request = self.backend.generate(prompt, self.sampling)
        except ChatBackendError as exc:
            self._finish("failed")
            self.error.emit(str(exc))
            return
        self.busy_changed.emit(True)
        self.reply_started.emit()

    def _prompt(self, conversation_id: int) -> list[dict[str, str]]:
        """The conversation as the model reads it: system prompt, then every non-empty message."""
        conversation = self.store.conversation(conversation_id)
        history = [m for m in self.store.messages(conversation_id) if m.content or m.role == "user"]
        prompt = []
        if conversation.system_prompt.strip():
            prompt.append({"role": "system", "content": conversation.system_prompt})
        prompt += [{"role": m.role, "content": m.content} for m in history if m.role != "system"]
        return prompt

    @Slot(int, str)
    def _on_token(self, rid: int, text: str) -> None:
        if rid == self._request and self._reply is not None:
            self.store.append(self._reply.id, text)  # stored before it is shown
            self.reply_text.emit(text)

    @Slot(int, str)
    def _on_finished(self, rid: int, reason: str) -> None:
        if rid == self._request:
            self._finish("stopped" if reason == "stopped" else "complete")

    @Slot(int, str)
    def _on_failed(self, rid: int, why: str) -> None:
        if rid == self._request and rid != 0:
            self._finish("failed")
        self.error.emit(why)

    def _finish(self, state: str) -> None:
        if self._reply is None:
            return
        self.flush()
        self.store.finish(self._reply.id, state)
        self._reply = None
        self._request = None
        self.busy_changed.emit(False)
        self.reply_finished.emit(state)
        self._emit_list()

    def _save_draft(self) -> None:
        self._draft_timer.stop()
        if self._draft is not None:
            cid, text = self._draft
            self._draft = None
            try:
                self.store.save_draft(cid, text)
            except HistoryError:
                pass  # the conversation was deleted meanwhile

    def _emit_list(self) -> None:
        self.conversations_changed.emit(self.store.conversations(), self.current)


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 40 else line[:39] + "…"
