"""Where no system tray exists: a small window carrying the tray's menu and its actions as buttons."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QLabel, QMainWindow, QSizePolicy, QToolButton, QVBoxLayout, QWidget

from corolla.app.contribute.state import ContributionState
from corolla.ui.tray_menu import TrayMenu


class MenuWindow(QMainWindow):
    closed = Signal()

    def __init__(self, menu: TrayMenu) -> None:
        super().__init__()
        self.setWindowTitle("Corolla")
        self.menu = menu
        self.menuBar().addMenu(menu)
        body = QWidget(self)
        layout = QVBoxLayout(body)
        self.status = QLabel("Contribute GPU: off", body)
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        for action in (menu.contribute_action, menu.stats_action, menu.open_chat_action, menu.swarm_action,
                       menu.settings_action, menu.quit_action):
            button = QToolButton(body)
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
            layout.addWidget(button)
        self.setCentralWidget(body)
        self.resize(340, 240)

    @Slot(object)
    def show_contribution(self, state: ContributionState) -> None:
        self.status.setText(self.menu.contribute_text(state))

    def closeEvent(self, event: QCloseEvent) -> None:
        self.closed.emit()
        super().closeEvent(event)
