"""The app against real processes: a local swarm (bootstrap + servers), the tray's toggle starting a
real server, the chat streaming through the swarm, Stop, and a reroute when a server is killed."""

import pytest

from corolla.app import settings as settings_file
from corolla.app.contribute.state import Phase
from corolla.app.demo.swarm import DemoSwarm
from corolla.app.settings import Settings
from corolla.core.generation import CHAT_SAMPLING
from corolla.p2p.names import peer_name
from corolla.ui.bridge.services import Services
from corolla.ui.tray_app import TrayApp

pytestmark = pytest.mark.slow

# Blocks 15–29 are served twice, so killing the server in use leaves a replacement.
SPANS = ((0, 15), (15, 30), (15, 30))


@pytest.fixture(scope="module")
def swarm():
    with DemoSwarm(spans=SPANS) as s:
        yield s


def open_app(qtbot, swarm, persist=False, **changes):
    settings = Settings(initial_peers=tuple(swarm.initial_peers),
                        sampling=CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=200), **changes)
    services = Services(settings, persist=persist)
    app = TrayApp(services)
    qtbot.addWidget(app.tray.window)
    return services, app


def test_toggle_starts_a_server_that_joins_the_swarm_and_stops_it(qtbot, swarm):
    services, app = open_app(qtbot, swarm, persist=True, blocks="0:15")
    try:
        app.menu.contribute_action.trigger()
        assert services.contribution.state.phase is Phase.STARTING
        assert app.menu.contribute_action.isChecked()
        qtbot.waitUntil(lambda: services.contribution.state.phase is Phase.SERVING, timeout=180_000)
        assert app.menu.contribute_action.text() == f"Contribute {app.menu.hardware}: serving blocks 0–14, 0 sessions"
        peer = services.contribution.state.peer_id
        assert peer and peer not in [s.peer_id for s in swarm.servers]
        assert settings_file.load().contribute  # remembered across restarts

        view = app.open_swarm()
        qtbot.waitUntil(lambda: peer in view.servers.peers(), timeout=60_000)
        assert view.servers.own_rows() == [view.servers.peers().index(peer)]  # this PC's server, marked
        assert view.servers.item(view.servers.own_rows()[0], 0).text() == f"{peer_name(peer, '')} (this PC)"
        assert "This PC" in view.own.text() and "serving now" in view.own.text()
        qtbot.waitUntil(lambda: view.coverage.counts == [2] * 30, timeout=30_000)

        app.menu.contribute_action.trigger()
        qtbot.waitUntil(lambda: services.contribution.state.phase is Phase.OFF, timeout=30_000)
        assert services.contribution.pid is None
        assert app.menu.contribute_action.text() == f"Contribute {app.menu.hardware}: off"
        assert not settings_file.load().contribute

        # the DHT still lists it for a day, but it no longer answers: shown as left, then not at all
        qtbot.waitUntil(lambda: view.servers.state_of(peer) != "online", timeout=30_000)
    finally:
        app.quit()


def test_chat_streams_from_the_swarm_stop_stops_and_reopening_keeps_it(qtbot, swarm):
    services, app = open_app(qtbot, swarm)
    try:
        chat = app.open_chat()
        pieces = []
        services.backend.token.connect(lambda rid, text: pieces.append(text))
        chat.composer.editor.setPlainText("Write a long poem about the sea.")
        with qtbot.waitSignal(services.backend.route_changed, timeout=90_000) as route:
            chat.composer.send_button.click()
        hops = route.args[0]
        assert [h.start for h in hops] == [0, 15] and hops[-1].end == 30
        assert {h.peer_id for h in hops} <= {s.peer_id for s in swarm.servers}
        assert chat.route.table.rowCount() == 2
        # every server of the local swarm is dialled directly, and the panel says so
        qtbot.waitUntil(lambda: [chat.route.table.item(r, 3).text() for r in range(2)] == ["direct"] * 2,
                        timeout=30_000)
        qtbot.waitUntil(lambda: len(pieces) >= 2, timeout=90_000)
        with qtbot.waitSignal(services.conversations.reply_finished, timeout=30_000) as finished:
            chat.composer.stop_button.click()
        assert finished.args == ["stopped"]
        shown = "".join(pieces)
        # markdown shows a single line break as a space: compare the words
        assert shown and " ".join(shown.split()) in " ".join(chat.messages.toPlainText().split())

        chat.close()
        chat = app.open_chat()
        text = chat.messages.toPlainText()
        assert "Write a long poem about the sea." in text and "[stopped]" in text
        assert " ".join(shown.split()) in " ".join(text.split())  # every word shown was kept
    finally:
        app.quit()


def test_headless_terminal_chat_streams_from_the_swarm(swarm):
    """`corolla demo --headless`'s chat loop, on the same swarm, reading lines and printing replies."""
    import io

    import trio

    from corolla.app.chat.terminal import terminal_chat
    from corolla.core.model import resolve_model

    out = io.StringIO()
    inp = io.StringIO("What is the capital of France?\n/quit\n")
    sampling = CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=6)
    assert trio.run(terminal_chat, swarm.initial_peers, resolve_model("default"), sampling, "", out, inp) == 0
    text = out.getvalue()
    assert "[route: blocks 0–14 on demo-0 (…" in text and "blocks 15–29 on demo-" in text
    reply = text.split("assistant> ", 1)[1].split("you> ", 1)[0].strip()
    assert reply, text


def test_killing_the_server_in_use_shows_a_reroute_notice(qtbot, swarm):
    services, app = open_app(qtbot, swarm)
    try:
        chat = app.open_chat()
        pieces = []
        services.backend.token.connect(lambda rid, text: pieces.append(text))
        chat.composer.editor.setPlainText("Explain how bridges are built, step by step.")
        with qtbot.waitSignal(services.backend.route_changed, timeout=90_000) as route:
            chat.composer.send_button.click()
        in_use = next(h.peer_id for h in route.args[0] if h.start == 15)
        qtbot.waitUntil(lambda: len(pieces) >= 1, timeout=90_000)
        victim = next(s for s in swarm.servers if s.peer_id == in_use)
        victim.kill()
        with qtbot.waitSignal(services.backend.rerouted, timeout=90_000) as rerouted:
            pass
        assert in_use[-8:] in rerouted.args[1] and "moved to another" in rerouted.args[0]
        assert chat.route.notice.isVisible() and "moved to another" in chat.route.notice.text()
        assert "moved to another" in chat.messages.toPlainText()  # in the transcript too
        assert in_use not in [h.peer_id for h in chat.route.hops]
        before = len(pieces)
        qtbot.waitUntil(lambda: len(pieces) > before, timeout=90_000)  # the reply goes on
        with qtbot.waitSignal(services.conversations.reply_finished, timeout=30_000):
            chat.composer.stop_button.click()
    finally:
        app.quit()


def test_the_local_api_toggle_serves_the_swarm_to_openai_clients(qtbot, swarm):
    import httpx

    services, app = open_app(qtbot, swarm)
    services.api.port = 0  # any free port (8000 by default)
    try:
        app.menu.api_action.trigger()
        qtbot.waitUntil(lambda: services.api.url != "", timeout=120_000)
        assert app.menu.api_action.text().startswith("Local API (OpenAI-compatible): on http://127.0.0.1:")
        reply = httpx.post(services.api.url + "/chat/completions", timeout=120, json={
            "model": "default", "temperature": 0, "max_tokens": 8,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        assert reply.status_code == 200, reply.text
        assert "Paris" in reply.json()["choices"][0]["message"]["content"]
        app.menu.api_action.trigger()
        assert services.api.state == "off" and app.menu.api_action.text().endswith(": off")
    finally:
        app.quit()
