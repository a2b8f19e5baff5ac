"""The chat window: conversations (with search) on the left, the transcript in the middle, and the
route and sampling on the right in collapsible sections. Its size and splitter are remembered."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QLineEdit,
    QMainWindow,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from corolla.app.chat.history import Conversation, Message
from corolla.app.paths import config_dir
from corolla.ui.bridge.chat_backend import ChatBackend, ModelCard
from corolla.ui.bridge.conversation import ConversationController
from corolla.ui.bridge.swarm_monitor import SwarmMonitor
from corolla.ui.composer import Composer
from corolla.ui.context_meter import ContextMeter
from corolla.ui.conversation_list import ConversationList
from corolla.ui.message_view import MessageView
from corolla.ui.model_selector import ModelSelector
from corolla.ui.route_panel import RoutePanel
from corolla.ui.sampling_panel import SamplingPanel
from corolla.ui.system_prompt_edit import SystemPromptEdit
from corolla.ui.tuning_picker import TuningPicker


class ChatWindow(QMainWindow):
    closed = Signal()

    def __init__(self, controller: ConversationController, backend: ChatBackend,
                 monitor: SwarmMonitor | None = None) -> None:
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
        self.models = ModelSelector(self)
        self.tuning = TuningPicker(self)
        self.sampling.show_sampling(controller.sampling)
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Search conversations")
        self.search.setClearButtonEnabled(True)

        left = QWidget(self)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.search)
        left_layout.addWidget(self.conversations, 1)
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
        right.addWidget(self.models)
        right.addWidget(self.tuning)
        right.addWidget(_section("Route", self.route, True, self))
        right.addWidget(self.route, 1)
        right.addWidget(self.system_prompt)
        right.addWidget(_section("Sampling", self.sampling, False, self))
        right.addWidget(self.sampling)
        right.addStretch(0)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(left)
        self.splitter.addWidget(middle)
        self.splitter.addWidget(side)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([200, 620, 260])
        self.setCentralWidget(self.splitter)
        self.resize(1080, 720)
        menu = self.menuBar().addMenu("&Conversation")
        for label, fmt in (("Export as &Markdown…", "markdown"), ("Export as &JSON…", "json")):
            action = QAction(label, self)
            action.triggered.connect(lambda _=False, fmt=fmt: self._ask_export(fmt))
            menu.addAction(action)
        self._restore_geometry()

        c = controller
        self.conversations.selected.connect(c.open)
        self.conversations.new_requested.connect(c.new)
        self.conversations.rename_requested.connect(c.rename)
        self.conversations.delete_requested.connect(c.delete)
        self.composer.send_requested.connect(c.send)
        self.composer.edit_submitted.connect(c.edit)
        self.messages.edit_requested.connect(self.composer.start_edit)
        self.search.textChanged.connect(lambda text: self.conversations.show_only(c.search(text)))
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
        c.error.connect(lambda text: self.messages.add_notice(text))
        backend.route_changed.connect(self.route.show_route)
        backend.paths_changed.connect(self.route.show_paths)
        backend.rerouted.connect(self.route.show_reroute)
        backend.rerouted.connect(self.messages.add_notice)
        backend.notice.connect(lambda text: self.messages.add_notice(text))
        backend.reply_stats.connect(lambda rid, stats: self.messages.show_stats(stats))
        backend.context_usage.connect(self.context.show_usage)
        backend.ready.connect(self._model_ready)
        self.tuning.tuned_requested.connect(backend.choose_tuned)
        self.tuning.adapter_requested.connect(backend.choose_adapter)
        self.tuning.adapters_wanted.connect(backend.find_adapters)
        backend.tuned_chosen.connect(self.tuning.show_tuned)
        backend.tuned_refused.connect(self.tuning.show_refusal)
        backend.adapters_offered.connect(self.tuning.show_adapters)
        if backend.card is not None:
            self._model_ready(backend.card)
        if backend.writer.tuned is not None:  # chosen before this window opened (remembered from last time)
            self.tuning.show_tuned(backend.writer.tuned)
        self.composer.editor.setFocus()  # a chat window opens ready to type in
        self.monitor = monitor
        if monitor is not None:  # servers of the route that leave fade out of the route panel
            monitor.snapshot.connect(self.route.show_snapshot)
            monitor.watch(self)

    @Slot(object, list)
    def _opened(self, conversation: Conversation, messages: list[Message]) -> None:
        self.messages.show_messages(messages)
        self.system_prompt.show_text(conversation.system_prompt)
        self.composer.set_draft(conversation.draft)
        self.composer.set_busy(self.controller.busy)
        self.composer.editor.setFocus()

    @Slot(str, bool)
    def show_model_choice(self, text: str, ok: bool) -> None:
        """What came of choosing a model: under the selector, and in the transcript."""
        self.models.show_status(text, ok)
        self.messages.add_notice(text)

    @Slot(object)
    def _model_ready(self, card: ModelCard) -> None:
        self.model_label.setText(f"Model: {card.name} ({card.num_blocks} blocks)")
        self.models.set_current(card.name)
        if self.context.limit == 0:
            self.context.show_usage(0, card.context_length)
        self.tuning.adapters_wanted.emit()  # which adapters this swarm offers, now that it is reachable

    def export_to(self, path: Path | str, fmt: str) -> Path:
        """Write the open conversation to `path` (markdown or json)."""
        return self.controller.export(Path(path), fmt)

    def _ask_export(self, fmt: str) -> None:
        suffix = {"markdown": "md", "json": "json"}[fmt]
        path, _ = QFileDialog.getSaveFileName(self, "Export conversation", f"conversation.{suffix}",
                                              f"{fmt.title()} (*.{suffix})")
        if path:
            self.export_to(path, fmt)

    def _window_settings(self) -> QSettings:
        return QSettings(str(config_dir() / "window.ini"), QSettings.Format.IniFormat)

    def _restore_geometry(self) -> None:
        saved = self._window_settings()
        geometry, sizes = saved.value("chat/geometry"), saved.value("chat/splitter")
        if geometry is not None:
            self.restoreGeometry(geometry)
        if sizes is not None:
            self.splitter.restoreState(sizes)

    def closeEvent(self, event: QCloseEvent) -> None:
        saved = self._window_settings()
        saved.setValue("chat/geometry", self.saveGeometry())
        saved.setValue("chat/splitter", self.splitter.saveState())
        self.controller.close()
        if self.monitor is not None:
            self.monitor.snapshot.disconnect(self.route.show_snapshot)
            self.monitor.unwatch(self)
        self.closed.emit()
        super().closeEvent(event)


def _section(title: str, body: QWidget, open_: bool, parent: QWidget) -> QToolButton:
    """A header that shows or hides `body` when clicked."""
    button = QToolButton(parent)
    button.setText(title)
    button.setCheckable(True)
    button.setChecked(open_)
    button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    button.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
    button.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
    body.setVisible(open_)

    def toggled(on: bool) -> None:
        body.setVisible(on)
        button.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    button.toggled.connect(toggled)
    return button
