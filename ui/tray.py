"""The tray icon, or the menu window where the platform has no system tray."""

from __future__ import annotations

from PySide6.QtCore import QObject, Slot
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QSystemTrayIcon

from corolla.app.contribute.state import ContributionState, Phase
from corolla.ui.menu_window import MenuWindow
from corolla.ui.tray_menu import TrayMenu

_COLORS = {Phase.OFF: "#8a8f98", Phase.STARTING: "#e0a030", Phase.SERVING: "#3aa55d",
           Phase.STOPPING: "#e0a030", Phase.ERROR: "#d04040"}


def state_icon(phase: Phase) -> QIcon:
    """A round icon coloured by the contribution state (a flower bud: the corolla)."""
    pix = QPixmap(64, 64)
    pix.fill(QColor(0, 0, 0, 0))
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(QColor("#ffffff"))
    p.setBrush(QColor(_COLORS[phase]))
    for dx, dy in ((0, -14), (14, 0), (0, 14), (-14, 0)):
        p.drawEllipse(20 + dx, 20 + dy, 24, 24)
    p.setBrush(QColor("#f5d04a"))
    p.drawEllipse(24, 24, 16, 16)
    p.end()
    return QIcon(pix)


class Tray(QObject):
    """Shows `menu` from a system tray icon, or from a `MenuWindow` when there is no tray."""

    def __init__(self, menu: TrayMenu, force_window: bool = False) -> None:
        super().__init__()
        self.menu = menu
        self.icon: QSystemTrayIcon | None = None
        self.window: MenuWindow | None = None
        if QSystemTrayIcon.isSystemTrayAvailable() and not force_window:
            self.icon = QSystemTrayIcon(state_icon(Phase.OFF), self)
            self.icon.setContextMenu(menu)
            self.icon.setToolTip("Corolla")
            self.icon.activated.connect(self._activated)
        else:
            self.window = MenuWindow(menu)
            self.window.setWindowIcon(state_icon(Phase.OFF))

    def show(self) -> None:
        if self.icon is not None:
            self.icon.show()
        if self.window is not None:
            self.window.show()

    @Slot(QSystemTrayIcon.ActivationReason)
    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:  # a left click opens the chat
            self.menu.open_chat_requested.emit()

    @Slot(object)
    def show_contribution(self, state: ContributionState) -> None:
        self.menu.show_contribution(state)
        icon = state_icon(state.phase)
        if self.icon is not None:
            self.icon.setIcon(icon)
            self.icon.setToolTip(f"Corolla — contribute GPU: {state.describe()}")
        if self.window is not None:
            self.window.show_contribution(state)
            self.window.setWindowIcon(icon)
