"""One contributed server that is the whole swarm: the tray counts the chat's session on it, and
shows why when the server dies."""

import os
import signal
import sys

import pytest

from corolla.app.contribute.state import Phase
from corolla.app.settings import Settings
from corolla.core.generation import CHAT_SAMPLING
from corolla.ui.bridge.services import Services
from corolla.ui.tray_app import TrayApp

pytestmark = pytest.mark.slow

# `corolla serve` with every log line and every line for people worded differently: the tray must
# follow the server through the status channel, not through what it says to people.
REWORDED_SERVER = [sys.executable, "-c", """
import logging, sys
plain = logging.getLogRecordFactory()
def reworded(*args, **kwargs):
    record = plain(*args, **kwargs)
    record.msg, record.args = "something happened", ()
    return record
logging.setLogRecordFactory(reworded)
import corolla.app.serve.runtime as runtime
runtime.say = lambda text: print("(reworded)", file=sys.stderr, flush=True)
from corolla.app.serve.child import main
sys.exit(main(sys.argv[1:]))
"""]


def test_tray_counts_sessions_and_reports_a_dead_server(qtbot):
    services = Services(Settings(blocks="0:30", sampling=CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=200)),
                        persist=False)
    services.contribution.command = REWORDED_SERVER
    said: list[str] = []
    services.contribution.output.connect(said.append)
    app = TrayApp(services)
    qtbot.addWidget(app.tray.window)
    try:
        app.menu.contribute_action.trigger()  # no initial peers: this server starts a new swarm,
        qtbot.waitUntil(lambda: services.contribution.state.phase is Phase.SERVING, timeout=180_000)
        qtbot.waitUntil(lambda: services.contribution.state.join_address != "", timeout=10_000)
        assert services.connection.initial_peers == [services.contribution.state.join_address]  # joined by the chat

        chat = app.open_chat()
        chat.composer.editor.setPlainText("Count from one to one hundred.")
        with qtbot.waitSignal(services.backend.route_changed, timeout=90_000) as route:
            chat.composer.send_button.click()
        assert [h.peer_id for h in route.args[0]] == [services.contribution.state.peer_id]
        qtbot.waitUntil(lambda: services.contribution.state.sessions == 1, timeout=30_000)
        assert app.menu.contribute_action.text() == f"Contribute {app.menu.hardware}: serving blocks 0–29, 1 session"
        assert "(reworded)" in said and not any("session" in line or "serving" in line for line in said), said

        os.kill(services.contribution.pid, getattr(signal, "SIGKILL", signal.SIGTERM))  # a crash
        qtbot.waitUntil(lambda: services.contribution.state.phase is Phase.ERROR, timeout=30_000)
        assert app.menu.contribute_action.text() == (
            f"Contribute {app.menu.hardware}: error: The server was stopped from outside or crashed. "
            "Turn Contribute on to start it again.")
        assert not app.menu.contribute_action.isChecked()
        with qtbot.waitSignal(services.conversations.reply_finished, timeout=120_000) as finished:
            pass  # the only server is gone: the reply ends with an error, not a hang
        assert finished.args == ["failed"]
        assert chat.route.notice.isVisible()
    finally:
        app.quit()
