"""The chat's model selector on a real swarm serving three tiny models: it lists them by the names
`corolla model info` prints, refuses in plain words a model not fully served or not on this computer,
and routes the next reply through the model chosen."""

import shutil

import pytest

from corolla.app.paths import data_dir
from corolla.app.settings import Settings
from corolla.core.generation import CHAT_SAMPLING
from corolla.core.model import ModelInfo
from corolla.ui.bridge.services import Services
from corolla.ui.tray_app import TrayApp
from tests.models import make_tiny_model
from tests.ui.swarm_thread import ThreadSwarm


@pytest.fixture(scope="module")
def models(tmp_path_factory, default_model_path):
    root = tmp_path_factory.mktemp("models")
    return {name: make_tiny_model(root / name, family, tokenizer_dir=default_model_path)
            for name, family in (("tiny-llama", "llama"), ("tiny-qwen", "qwen2"), ("tiny-mistral", "mistral"))}


def test_choosing_a_model_routes_the_next_reply_through_it(qtbot, models):
    swarm = ThreadSwarm()
    app = None
    try:
        llama = {swarm.add("l1", models["tiny-llama"], 0, 3), swarm.add("l2", models["tiny-llama"], 3, 6)}
        swarm.add("q1", models["tiny-qwen"], 0, 3)  # blocks 3-5 of tiny-qwen: nobody
        swarm.add("m1", models["tiny-mistral"], 0, 6)  # fully served, but no copy on this computer
        shutil.copytree(models["tiny-llama"], data_dir() / "models" / "tiny-llama")  # the local library
        settings = Settings(initial_peers=(swarm.bootstrap,), model=str(models["tiny-qwen"]),
                            sampling=CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=4))
        services = Services(settings, persist=False)
        app = TrayApp(services)
        chat = app.open_chat()
        selector = chat.models
        qtbot.waitUntil(lambda: len(selector.models) == 3, timeout=60_000)
        assert [selector.combo.itemText(i) for i in range(3)] == [
            "tiny-llama — 6 blocks, 2 servers",
            "tiny-mistral — 6 blocks, 1 server",
            "tiny-qwen — not fully served (no server holds blocks 3–5)",
        ]
        llama_info = ModelInfo.load(models["tiny-llama"])
        listed = selector.models[0]
        assert (listed.name, listed.hash) == (llama_info.name, llama_info.hash)  # as `corolla model info` says

        with qtbot.waitSignal(services.model_choice) as refused:
            selector.choose("tiny-qwen")
        assert refused.args[1] is False and "tiny-qwen is not fully served: no server holds blocks 3–5" in refused.args[0]
        assert "not fully served" in selector.status.text() and "not fully served" in chat.messages.toPlainText()
        with qtbot.waitSignal(services.model_choice) as no_copy:
            selector.choose("tiny-mistral")
        assert no_copy.args[1] is False and "no copy of it" in no_copy.args[0]
        assert services.chat_model is None

        with qtbot.waitSignal(services.backend.ready, timeout=60_000) as ready:
            selector.choose("tiny-llama")
        assert ready.args[0].name == "tiny-llama" and "tiny-llama" in chat.model_label.text()
        assert selector.combo.currentText().startswith("tiny-llama")
        chosen = services.chat_model
        assert chosen is not None and services.settings.chat_model == str(chosen)  # remembered ...
        again = Services(services.settings, persist=False)
        try:
            assert again.chat_model == chosen  # ... and the next start chats with it
        finally:
            again.shutdown()

        routes, states = [], []
        services.backend.route_changed.connect(routes.append)
        services.conversations.reply_finished.connect(states.append)
        chat.composer.editor.setPlainText("Hello")
        chat.composer.send_button.click()
        qtbot.waitUntil(lambda: bool(states), timeout=60_000)
        assert states == ["complete"]
        hops = routes[0]
        assert {h.server.model_name for h in hops} == {"tiny-llama"} and {h.peer_id for h in hops} == llama
    finally:
        if app is not None:
            app.quit()
        swarm.close()
