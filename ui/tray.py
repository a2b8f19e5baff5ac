"""The tray icon, or the menu window where the platform has no system tray."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QObject, Slot
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QSystemTrayIcon

from corolla.app.contribute.state import ContributionState, Phase
from corolla.resources import files
from corolla.ui.menu_window import MenuWindow
from corolla.ui.tray_menu import TrayMenu

_COLORS = {Phase.OFF: "#8a8f98", Phase.STARTING: "#e0a030", Phase.SERVING: "#3aa55d",
           Phase.STOPPING: "#e0a030", Phase.PAUSED: "#5b8bd0", Phase.ERROR: "#d04040"}


def state_icon(phase: Phase) -> QIcon:
    """The app's icon (resources/icon.svg, a corolla) with its petals coloured by the contribution
    state, rendered at the sizes trays and window managers ask for."""
    svg = files().joinpath("icon.svg").read_text(encoding="utf-8").replace("#3aa55d", _COLORS[phase])
    renderer = QSvgRenderer(QByteArray(svg.encode()))
    icon = QIcon()
    for size in (16, 22, 24, 32, 48, 64, 128):
        pix = QPixmap(size, size)
        pix.fill(QColor(0, 0, 0, 0))
        painter = QPainter(pix)
        renderer.render(painter)
        painter.end()
        icon.addPixmap(pix)
    return icon


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
            self.icon.setToolTip(f"Corolla — {self.menu.contribute_text(state)}")
        if self.window is not None:
            self.window.show_contribution(state)
            self.window.setWindowIcon(icon)
