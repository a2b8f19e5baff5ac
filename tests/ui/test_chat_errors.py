"""What the chat says when it cannot work: no swarm set, the network down, blocks missing."""

import pytest

from corolla.app.demo.swarm import DemoSwarm
from corolla.app.settings import Settings
from corolla.core.generation import CHAT_SAMPLING
from corolla.ui.bridge.services import Services
from corolla.ui.tray_app import TrayApp

UNREACHABLE = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWEjqq2Jvhq87y75M4jHXoztEX7846jLQEdMf6MXnm8zWG"


def send(qtbot, peers, text="Hello?"):
    services = Services(Settings(initial_peers=peers, sampling=CHAT_SAMPLING.replace(max_new_tokens=4)), persist=False)
    app = TrayApp(services)
    qtbot.addWidget(app.tray.window)
    chat = app.open_chat()
    chat.composer.editor.setPlainText(text)
    chat.composer.send_button.click()
    return services, app, chat


@pytest.mark.parametrize("peers, words", [
    ((), "no swarm to join: add initial peers in Settings"),
    ((UNREACHABLE,), "cannot reach the swarm"),
])
def test_no_swarm_or_network_down_is_said_plainly(qtbot, peers, words):
    services, app, chat = send(qtbot, peers)
    try:
        with qtbot.waitSignal(services.conversations.reply_finished, timeout=60_000) as finished:
            pass
        assert finished.args == ["failed"]
        qtbot.waitUntil(lambda: words in chat.route.notice.text(), timeout=5000)
        assert chat.route.notice.isVisible()
        assert chat.composer.send_button.isEnabled()  # the user can fix the settings and retry
        assert "[failed]" in chat.messages.toPlainText()
    finally:
        app.quit()


@pytest.mark.slow
def test_missing_blocks_are_named_while_waiting_for_a_server(qtbot):
    with DemoSwarm(spans=()) as swarm:  # a bootstrap peer and no server at all
        services, app, chat = send(qtbot, tuple(swarm.initial_peers))
        try:
            with qtbot.waitSignal(services.backend.notice, timeout=60_000) as notice:
                pass
            assert "Waiting for a server for blocks 0–29" in notice.args[0]
            assert "Waiting" in chat.route.notice.text()
            assert "Waiting for a server for blocks 0–29" in chat.messages.toPlainText()  # in the transcript too
            with qtbot.waitSignal(services.conversations.reply_finished, timeout=30_000) as finished:
                chat.composer.stop_button.click()
            assert finished.args == ["stopped"]
        finally:
            app.quit()
