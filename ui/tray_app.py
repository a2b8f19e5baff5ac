"""The whole GUI: the tray (or its window), and the chat, swarm and settings windows it opens."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QApplication, QMessageBox

from corolla.app.settings import Settings
from corolla.ui.bridge.services import Services
from corolla.ui.chat_window import ChatWindow
from corolla.ui.settings_dialog import SettingsDialog
from corolla.ui.swarm_view import SwarmView
from corolla.ui.tray import Tray
from corolla.ui.tray_menu import TrayMenu
from corolla.ui.welcome_dialog import WelcomeDialog


class TrayApp(QObject):
    quit_requested = Signal()

    def __init__(self, services: Services, force_window: bool = False) -> None:
        super().__init__()
        self.services = services
        self.menu = TrayMenu()
        self.tray = Tray(self.menu, force_window=force_window)
        self.chat: ChatWindow | None = None
        self.swarm: SwarmView | None = None
        self.settings_dialog: SettingsDialog | None = None
        self._quitting = False
        s = services
        self.menu.contribute_toggled.connect(s.set_contributing)
        self.menu.api_toggled.connect(s.set_api)
        s.api.state_changed.connect(self.menu.show_api)
        self.menu.open_chat_requested.connect(self.open_chat)
        self.menu.swarm_requested.connect(self.open_swarm)
        self.menu.settings_requested.connect(self.open_settings)
        self.menu.quit_requested.connect(self.quit)
        s.contribution.state_changed.connect(self.tray.show_contribution)
        s.contribution.state_changed.connect(self._show_own_server)
        s.contribution.stats_changed.connect(self.menu.show_stats)
        s.contribution.stats_changed.connect(self._show_own_server)
        s.settings_changed.connect(self._show_hardware)
        self.menu.show_stats(s.contribution.stats)
        self._show_hardware(s.settings)
        s.settings_refused.connect(self._warn)
        self.tray.show_contribution(s.contribution.state)
        if self.tray.window is not None:
            self.tray.window.closed.connect(self.quit)

    def show(self) -> None:
        self.tray.show()
        if self.services.settings_error:
            self._warn(self.services.settings_error)
        elif self.services.first_run:
            self.open_welcome()

    @Slot()
    def open_welcome(self) -> WelcomeDialog:
        from corolla.app.settings import default_bootstrap_peers

        s = self.services
        self.welcome = WelcomeDialog(default_bootstrap_peers())
        self.welcome.join_public.connect(lambda: s.welcome("public"))
        self.welcome.join_private.connect(lambda address: s.welcome("private", address))
        self.welcome.start_here.connect(lambda: s.welcome("here"))
        self.welcome.later.connect(lambda: s.welcome("later"))
        self.welcome.show()
        return self.welcome

    @Slot()
    def open_chat(self) -> ChatWindow:
        if self.chat is None:
            self.chat = ChatWindow(self.services.conversations, self.services.backend, self.services.monitor)
            self.services.backend.notice.connect(self.chat.route.show_error)
            self.chat.sampling.changed.connect(self.services.remember_sampling)
            catalog = self.services.catalog
            catalog.models.connect(self.chat.models.show_models)
            catalog.failed.connect(self.chat.models.show_failure)
            self.chat.models.refresh_requested.connect(catalog.refresh)
            self.chat.models.chosen.connect(self.services.choose_model)
            self.chat.tuning.remembered = self.services.settings.adapter or None
            self.chat.tuning.adapter_picked.connect(self.services.remember_adapter)
            self.services.model_choice.connect(self.chat.show_model_choice)
            if catalog.last:
                self.chat.models.show_models(catalog.last)
            catalog.refresh()
            self.chat.closed.connect(self._chat_closed)
            self.services.conversations.start()
        self.chat.show()
        self.chat.raise_()
        self.chat.activateWindow()
        return self.chat

    @Slot()
    def open_swarm(self) -> SwarmView:
        if self.swarm is None:
            self.swarm = SwarmView()
            self.services.monitor.snapshot.connect(self.swarm.show_snapshot)
            self.swarm.closed.connect(lambda: self.services.monitor.unwatch(self.swarm))
            self._show_own_server()
            if self.services.monitor.last is not None:
                self.swarm.show_snapshot(self.services.monitor.last)
        self.services.monitor.watch(self.swarm)
        self.swarm.show()
        self.swarm.raise_()
        return self.swarm

    @Slot()
    def open_settings(self) -> SettingsDialog:
        if self.settings_dialog is None:
            self.settings_dialog = SettingsDialog(self.services.settings)
            self.settings_dialog.accepted_settings.connect(self._settings_accepted)
        else:
            self.settings_dialog.show_settings(self.services.settings)
        self.settings_dialog.show()
        self.settings_dialog.raise_()
        return self.settings_dialog

    @Slot(object)
    def _show_hardware(self, settings: Settings) -> None:
        from corolla.app.contribute.state import lent_hardware

        self.menu.show_hardware(lent_hardware(settings))
        self.tray.show_contribution(self.services.contribution.state)

    @Slot()
    def _show_own_server(self, *_: object) -> None:
        """The swarm view marks this PC's server (by peer id) and shows what it served."""
        if self.swarm is not None:
            c = self.services.contribution
            self.swarm.show_own(c.state.peer_id, c.stats)

    @Slot(object)
    def _settings_accepted(self, settings: Settings) -> None:
        self.services.apply_settings(settings)

    @Slot()
    def _chat_closed(self) -> None:
        chat, self.chat = self.chat, None
        if chat is not None:
            self.services.backend.notice.disconnect(chat.route.show_error)
            self.services.model_choice.disconnect(chat.show_model_choice)
            self.services.catalog.models.disconnect(chat.models.show_models)
            self.services.catalog.failed.disconnect(chat.models.show_failure)
            chat.deleteLater()

    @Slot(str)
    def _warn(self, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, "Corolla", text)
        box.setModal(False)
        box.show()
        self._warning = box

    @Slot()
    def quit(self) -> None:
        if self._quitting:
            return
        self._quitting = True
        for w in (self.chat, self.swarm, self.settings_dialog):
            if w is not None:
                w.close()
        self.services.shutdown()
        self.quit_requested.emit()
        app = QApplication.instance()
        if app is not None:
            app.quit()
