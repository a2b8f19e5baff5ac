"""The first run: a welcome dialog with the choices of swarm; "start a swarm on this PC" serves the
whole model and the chat joins it. Answered once, it does not come back."""

from __future__ import annotations

import pytest

from corolla.app import settings as settings_file
from corolla.app.contribute.state import Phase
from corolla.ui.bridge.services import Services
from corolla.ui.tray_app import TrayApp
from corolla.ui.welcome_dialog import WelcomeDialog


def test_a_private_swarm_address_is_checked_and_kept(qtbot):
    services = Services()  # no settings file yet: a first run
    app = TrayApp(services)
    try:
        app.show()
        dialog = app.welcome
        qtbot.addWidget(dialog)
        assert dialog.isVisible()
        assert not dialog.public_button.isEnabled()  # this build lists no public swarm
        assert "never the text" in dialog.findChild(type(dialog.error), "privacyNote").text()
        dialog.address.setText("/ip4/203.0.113.5/tcp/31337")
        dialog.private_button.click()
        assert dialog.isVisible() and "/p2p/" in dialog.error.text()  # marked, with the reason
        peer = "/ip4/203.0.113.5/tcp/31337/p2p/12D3KooWEjqq2Jvhq87y75M4jHXoztEX7846jLQEdMf6MXnm8zWG"
        dialog.address.setText(peer)
        dialog.private_button.click()
        assert not dialog.isVisible()
        saved = settings_file.load()
        assert saved.welcomed and saved.initial_peers == (peer,) and not saved.contribute
    finally:
        app.quit()
    again = Services()
    assert not again.first_run  # answered once
    again.shutdown()


@pytest.mark.slow
def test_start_a_swarm_here_serves_the_whole_model(qtbot):
    services = Services()
    app = TrayApp(services)
    try:
        app.show()
        assert isinstance(app.welcome, WelcomeDialog)
        app.welcome.start_button.click()
        assert services.settings.blocks == "0:30" and services.settings.initial_peers == ()
        assert services.contribution.state.active
        qtbot.waitUntil(lambda: services.contribution.state.phase is Phase.SERVING, timeout=180_000)
        assert app.menu.contribute_action.text() == f"Contribute {app.menu.hardware}: serving blocks 0–29, 0 sessions"
        qtbot.waitUntil(lambda: services.contribution.state.join_address != "", timeout=10_000)
        assert services.connection.initial_peers == [services.contribution.state.join_address]
        assert settings_file.load().contribute and settings_file.load().welcomed
    finally:
        app.quit()
