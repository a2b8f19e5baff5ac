"""Volunteer controls on real processes: a simulated busy GPU pauses the contributed server, which
drains first, so the reply in progress moves to other servers and its text is unchanged; when the
GPU is free again, serving resumes by itself."""

from __future__ import annotations

import pytest

from corolla.app.contribute.state import Phase
from corolla.app.contribute.volunteer import MachineState
from corolla.app.demo.swarm import DemoSwarm
from corolla.app.settings import Settings
from corolla.core.generation import CHAT_SAMPLING
from corolla.ui.bridge.services import Services
from corolla.ui.tray_app import TrayApp

pytestmark = pytest.mark.slow
QUESTION = "Tell me a long story about a dragon who learns to sing."


def test_a_busy_gpu_pauses_serving_without_changing_the_reply_and_serving_resumes(qtbot):
    # Two hops announcing a slow 50 ms per block: the contributed 0:30 is the cheaper route, however
    # busy the machine was when it measured itself.
    with DemoSwarm(spans=((0, 15), (15, 30)), extra_args=("--block-ms", "50")) as swarm:
        settings = Settings(initial_peers=tuple(swarm.initial_peers), blocks="0:30",
                            sampling=CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=120))
        services = Services(settings, persist=False)
        machine = {"state": MachineState(other_gpu_percent=0.0)}
        services.volunteer.read = lambda: machine["state"]
        app = TrayApp(services)
        qtbot.addWidget(app.tray.window)
        try:
            app.menu.contribute_action.trigger()
            qtbot.waitUntil(lambda: services.contribution.state.phase is Phase.SERVING, timeout=180_000)
            ours = services.contribution.state.peer_id
            app.open_chat()
            pieces: list[str] = []
            services.backend.token.connect(lambda rid, text: pieces.append(text))
            with qtbot.waitSignal(services.backend.route_changed, timeout=120_000) as route:
                services.conversations.send(QUESTION)
            assert [h.peer_id for h in route.args[0]] == [ours], (route.args[0], ours, [s.peer_id for s in swarm.servers])
            qtbot.waitUntil(lambda: len(pieces) >= 5, timeout=60_000)

            machine["state"] = MachineState(other_gpu_percent=95.0)  # a game starts
            services.volunteer.check()
            assert services.contribution.state.phase is Phase.STOPPING
            with qtbot.waitSignal(services.conversations.reply_finished, timeout=120_000) as finished:
                pass
            assert finished.args == ["complete"]
            qtbot.waitUntil(lambda: services.contribution.state.phase is Phase.PAUSED, timeout=60_000)
            assert app.menu.contribute_action.text() == \
                f"Contribute {app.menu.hardware}: paused: another program is using the GPU (95%)"
            assert app.menu.contribute_action.isChecked()
            paused_reply = services.store.messages(services.conversations.current)[-1].content

            services.conversations.new()  # the same question again, without any pause
            with qtbot.waitSignal(services.conversations.reply_finished, timeout=120_000):
                services.conversations.send(QUESTION)
            assert services.store.messages(services.conversations.current)[-1].content == paused_reply

            machine["state"] = MachineState(other_gpu_percent=3.0)  # the game ended
            services.volunteer.check()
            qtbot.waitUntil(lambda: services.contribution.state.phase is Phase.SERVING, timeout=180_000)
            assert services.contribution.state.peer_id == ours  # the same identity after the pause
        finally:
            app.quit()
