from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSystemTrayIcon, QToolButton

from corolla.app import settings as settings_file
from corolla.app.contribute.state import ContributionState, Phase
from corolla.app.settings import Settings
from corolla.ui.bridge.services import Services
from corolla.ui.tray import Tray
from corolla.ui.tray_app import TrayApp
from corolla.ui.tray_menu import TrayMenu


def test_menu_has_the_actions_and_shows_the_state(qtbot):
    menu = TrayMenu()
    qtbot.addWidget(menu)
    texts = [a.text() for a in menu.actions() if not a.isSeparator()]
    assert texts == ["Contribute GPU: off", "Served: nothing yet", "Open chat", "Local API (OpenAI-compatible): off", "Swarm status",
                     "Settings…", "Quit"]
    with qtbot.waitSignal(menu.contribute_toggled) as toggled:
        menu.contribute_action.trigger()
    assert toggled.args == [True]
    with qtbot.assertNotEmitted(menu.contribute_toggled):
        menu.show_contribution(ContributionState(Phase.SERVING, 0, 10, sessions=2))
        menu.show_contribution(ContributionState(Phase.ERROR, error="no CUDA GPU"))
    assert menu.contribute_action.text() == "Contribute GPU: error: no CUDA GPU"
    assert not menu.contribute_action.isChecked()
    menu.show_contribution(ContributionState(Phase.SERVING, 0, 10, sessions=2))
    assert menu.contribute_action.text() == "Contribute GPU: serving blocks 0–9, 2 sessions"
    assert menu.contribute_action.isChecked()


def test_without_a_system_tray_the_menu_is_on_a_window(qtbot):
    assert not QSystemTrayIcon.isSystemTrayAvailable()  # offscreen, as measured
    menu = TrayMenu()
    tray = Tray(menu)
    assert tray.icon is None and tray.window is not None
    qtbot.addWidget(tray.window)
    tray.show()
    assert tray.window.menuBar().actions()[0].menu() is menu
    buttons = {b.defaultAction().text(): b for b in tray.window.findChildren(QToolButton)
               if b.defaultAction() is not None}
    assert "Open chat" in buttons
    with qtbot.waitSignal(menu.open_chat_requested):
        qtbot.mouseClick(buttons["Open chat"], Qt.MouseButton.LeftButton)
    tray.show_contribution(ContributionState(Phase.STARTING))
    assert tray.window.status.text() == "Contribute GPU: starting…"


def test_settings_from_the_menu_are_validated_and_remembered(qtbot):
    services = Services(Settings())
    app = TrayApp(services)
    qtbot.addWidget(app.tray.window)
    try:
        app.menu.settings_action.trigger()
        dialog = app.settings_dialog
        assert dialog is not None and dialog.isVisible()
        dialog.port.setText("99999")
        dialog.try_accept()
        assert dialog.isVisible() and "port" in dialog.error.text()
        assert not (settings_file.config_dir() / settings_file.SETTINGS_FILE).exists()
        dialog.port.setText("31337")
        dialog.blocks.setText("0:12")
        with qtbot.waitSignal(services.settings_changed):
            dialog.try_accept()
        assert not dialog.isVisible()
        saved = settings_file.load()
        assert (saved.port, saved.blocks) == (31337, "0:12")
    finally:
        services.shutdown()


def test_sampling_set_in_the_chat_is_remembered(qtbot):
    services = Services(Settings())
    app = TrayApp(services)
    qtbot.addWidget(app.tray.window)
    try:
        chat = app.open_chat()
        chat.sampling.top_k.setValue(7)
        assert services.conversations.sampling.top_k == 7
        assert settings_file.load().sampling.top_k == 7
    finally:
        app.quit()


def test_the_menu_names_what_is_lent_and_what_was_served(qtbot):
    from corolla.app.serve.stats import ServedStats

    menu = TrayMenu()
    qtbot.addWidget(menu)
    menu.show_contribution(ContributionState(Phase.SERVING, 0, 30, sessions=1))
    menu.show_hardware("CPU (4 threads)")
    assert menu.contribute_action.text() == "Contribute CPU (4 threads): serving blocks 0–29, 1 session"
    assert menu.stats_action.text() == "Served: nothing yet" and not menu.stats_action.isEnabled()
    menu.show_stats(ServedStats(1234, 5, 9000))
    assert menu.stats_action.text() == "Served: 1,234 tokens · 5 sessions · 2.5 h online"
