"""The chat window: conversations on the left, the conversation in the middle, route and knobs right."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QLabel, QMainWindow, QSplitter, QVBoxLayout, QWidget

from corolla.app.chat.history import Conversation, Message
from corolla.ui.bridge.chat_backend import ChatBackend, ModelCard
from corolla.ui.bridge.conversation import ConversationController
from corolla.ui.composer import Composer
from corolla.ui.context_meter import ContextMeter
from corolla.ui.conversation_list import ConversationList
from corolla.ui.message_view import MessageView
from corolla.ui.route_panel import RoutePanel
from corolla.ui.sampling_panel import SamplingPanel
from corolla.ui.system_prompt_edit import SystemPromptEdit


class ChatWindow(QMainWindow):
    closed = Signal()

    def __init__(self, controller: ConversationController, backend: ChatBackend) -> None:
        super().__init__()
        self.setWindowTitle("Corolla chat")
        self.controller = controller
        self.conversations = ConversationList(self)
        self.messages = MessageView(self)
        self.composer = Composer(self)
        self.route = RoutePanel(self)
        self.sampling = SamplingPanel(self)
        self.system_prompt = SystemPromptEdit(self)
        self.context = ContextMeter(self)
        self.model_label = QLabel("Model: loading…", self)
        self.sampling.show_sampling(controller.sampling)

        middle = QWidget(self)
        mid = QVBoxLayout(middle)
        mid.setContentsMargins(0, 0, 0, 0)
        mid.addWidget(self.messages, 1)
        mid.addWidget(self.context)
        mid.addWidget(self.composer)
        side = QWidget(self)
        right = QVBoxLayout(side)
        right.setContentsMargins(0, 0, 0, 0)
        right.addWidget(self.model_label)
        right.addWidget(self.route, 1)
        right.addWidget(self.system_prompt)
        right.addWidget(QLabel("<b>Sampling</b>", self))
        right.addWidget(self.sampling)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.conversations)
        splitter.addWidget(middle)
        splitter.addWidget(side)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([200, 520, 280])
        self.setCentralWidget(splitter)
        self.resize(1080, 720)

        c = controller
        self.conversations.selected.connect(c.open)
        self.conversations.new_requested.connect(c.new)
        self.conversations.rename_requested.connect(c.rename)
        self.conversations.delete_requested.connect(c.delete)
        self.composer.send_requested.connect(c.send)
        self.composer.stop_requested.connect(c.stop)
        self.composer.regenerate_requested.connect(c.regenerate)
        self.composer.draft_changed.connect(c.set_draft)
        self.system_prompt.changed.connect(c.set_system_prompt)
        self.sampling.changed.connect(c.set_sampling)
        c.conversations_changed.connect(self.conversations.show_conversations)
        c.opened.connect(self._opened)
        c.user_message_added.connect(self.messages.add_user_message)
        c.reply_started.connect(self.messages.begin_reply)
        c.reply_started.connect(self.route.clear_notice)
        c.reply_text.connect(self.messages.append_text)
        c.reply_finished.connect(self.messages.end_reply)
        c.busy_changed.connect(self.composer.set_busy)
        c.error.connect(self.route.show_error)
        backend.route_changed.connect(self.route.show_route)
        backend.rerouted.connect(self.route.show_reroute)
        backend.context_usage.connect(self.context.show_usage)
        backend.ready.connect(self._model_ready)
        if backend.card is not None:
            self._model_ready(backend.card)

    @Slot(object, list)
    def _opened(self, conversation: Conversation, messages: list[Message]) -> None:
        self.messages.show_messages(messages)
        self.system_prompt.show_text(conversation.system_prompt)
        self.composer.set_draft(conversation.draft)
        self.composer.set_busy(self.controller.busy)

    @Slot(object)
    def _model_ready(self, card: ModelCard) -> None:
        self.model_label.setText(f"Model: {card.name} ({card.num_blocks} blocks)")
        if self.context.limit == 0:
            self.context.show_usage(0, card.context_length)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.controller.close()
        self.closed.emit()
        super().closeEvent(event)
