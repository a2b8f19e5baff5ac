"""The list of conversations with New, Rename (edit in place) and Delete (click twice to confirm)."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from corolla.app.chat.history import Conversation

_ID = Qt.ItemDataRole.UserRole
CONFIRM_MS = 3000  # how long "Delete?" waits for the second click


class ConversationList(QWidget):
    selected = Signal(int)  # conversation id
    new_requested = Signal()
    rename_requested = Signal(int, str)
    delete_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget(self)
        self.list.currentItemChanged.connect(self._current_changed)
        self.list.itemChanged.connect(self._item_edited)
        self.new_button = QPushButton("New", self)
        self.new_button.clicked.connect(self.new_requested)
        self.rename_button = QPushButton("Rename", self)
        self.rename_button.clicked.connect(self._start_rename)
        self.delete_button = QPushButton("Delete", self)
        self.delete_button.clicked.connect(self._delete)
        buttons = QHBoxLayout()
        for b in (self.new_button, self.rename_button, self.delete_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        self._filling = False
        self._confirm = QTimer(self)
        self._confirm.setSingleShot(True)
        self._confirm.setInterval(CONFIRM_MS)
        self._confirm.timeout.connect(self._reset_delete)

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return int(item.data(_ID)) if item is not None else None

    def titles(self) -> list[str]:
        """The titles shown (those a search hides are left out)."""
        return [self.list.item(i).text() for i in range(self.list.count()) if not self.list.item(i).isHidden()]

    def show_only(self, ids: list[int]) -> None:
        """Hide every conversation not in `ids` (a search's result)."""
        keep = set(ids)
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setHidden(int(item.data(_ID)) not in keep)

    @Slot(list, object)
    def show_conversations(self, conversations: list[Conversation], current: int | None = None) -> None:
        """Replace the list (most recent first) and select `current` without emitting `selected`."""
        self._filling = True
        try:
            self.list.clear()
            for c in conversations:
                item = QListWidgetItem(c.title)
                item.setData(_ID, c.id)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                self.list.addItem(item)
                if c.id == current:
                    self.list.setCurrentItem(item)
        finally:
            self._filling = False

    def rename_current(self, title: str) -> None:
        """Rename the selected conversation as if the user had typed `title` in place."""
        item = self.list.currentItem()
        if item is not None:
            item.setText(title)

    @Slot()
    def _start_rename(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.list.editItem(item)

    @Slot()
    def _delete(self) -> None:
        cid = self.current_id()
        if cid is None:
            return
        if not self._confirm.isActive():  # first click: ask
            self.delete_button.setText("Delete?")
            self.delete_button.setToolTip("Click again to delete this conversation")
            self._confirm.start()
            return
        self._reset_delete()
        self.delete_requested.emit(cid)

    @Slot()
    def _reset_delete(self) -> None:
        self._confirm.stop()
        self.delete_button.setText("Delete")
        self.delete_button.setToolTip("")

    @Slot(QListWidgetItem, QListWidgetItem)
    def _current_changed(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        self._reset_delete()
        if current is not None and not self._filling:
            self.selected.emit(int(current.data(_ID)))

    @Slot(QListWidgetItem)
    def _item_edited(self, item: QListWidgetItem) -> None:
        if not self._filling:
            self.rename_requested.emit(int(item.data(_ID)), item.text())
