"""The tuned-prompts and adapter picker next to the model, on real widgets and the real chat backend:
a file made for another model is refused in plain words, one made for this model is used, and an
adapter picked for blocks that run on this computer is refused when the reply starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QFileDialog

from corolla.app.settings import Settings
from corolla.core.generation import CHAT_SAMPLING
from corolla.core.model import ModelInfo
from corolla.core.tuning.prompts import TunedPrompts
from corolla.ui.bridge.services import Services
from corolla.ui.tray_app import TrayApp
from corolla.ui.tuning_picker import TuningPicker

pytestmark = pytest.mark.slow


@pytest.fixture
def chat(qtbot):
    settings = Settings(sampling=CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=2))
    services = Services(settings, persist=False, local_spans=[(0, 30)])
    app = TrayApp(services)
    qtbot.addWidget(app.tray.window)
    window = app.open_chat()
    services.backend.load()  # what `corolla app` does at start
    qtbot.waitUntil(lambda: services.backend.card is not None, timeout=120_000)
    yield services, window
    app.quit()


def tuned_file(folder: Path, model: ModelInfo, model_hash: str, name: str) -> Path:
    path = folder / name
    TunedPrompts(2, 576, model.num_blocks).save(path, model.name, model_hash)
    return path


def pick(qtbot, monkeypatch, picker: TuningPicker, path: Path, signal) -> list:
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(path), ""))
    with qtbot.waitSignal(signal, timeout=60_000) as got:
        picker.choose.click()
    return got.args


def test_a_file_for_another_model_is_refused_and_one_for_this_model_is_used(qtbot, monkeypatch, chat, tmp_path,
                                                                            default_model_path):
    services, window = chat
    picker, backend = window.tuning, services.backend
    model = ModelInfo.load(default_model_path)
    other = tuned_file(tmp_path, model, "0" * len(model.hash), "other.safetensors")
    mine = tuned_file(tmp_path, model, model.hash, "mine.safetensors")

    [why] = pick(qtbot, monkeypatch, picker, other, backend.tuned_refused)
    assert "was tuned for model" in why and "not this model" in why
    assert picker.problem.isVisibleTo(window) and picker.problem.text() == why
    assert picker.tuned_name.text() == "none" and backend.writer.tuned is None

    assert pick(qtbot, monkeypatch, picker, mine, backend.tuned_chosen) == [mine]
    assert picker.tuned_name.text() == "mine.safetensors" and not picker.problem.isVisibleTo(window)
    assert backend.writer.tuned == mine and picker.clear.isEnabled()

    [why] = pick(qtbot, monkeypatch, picker, tmp_path / "missing.safetensors", backend.tuned_refused)
    assert "does not exist" in why and backend.writer.tuned == mine  # the previous choice stays

    with qtbot.waitSignal(backend.tuned_chosen, timeout=60_000) as cleared:
        picker.clear.click()
    assert cleared.args == [None] and picker.tuned_name.text() == "none" and backend.writer.tuned is None


def test_adapters_on_offer_are_listed_and_a_local_route_refuses_one(qtbot, chat):
    services, window = chat
    picker = window.tuning
    with qtbot.waitSignal(services.backend.adapters_offered, timeout=60_000) as offered:
        picker.refresh.click()
    assert offered.args == [[]]  # blocks on this computer: no server offers anything
    assert not picker.adapter.isEnabled()

    picker.show_adapters(["greeter", "sql"])  # as the swarm would answer
    assert picker.adapter.isEnabled() and picker.adapter.count() == 3
    picker.adapter.setCurrentIndex(1)
    picker.adapter.activated.emit(1)  # what a click on the item does
    assert services.backend.writer.adapter == "greeter"
    with qtbot.waitSignal(services.conversations.error, timeout=120_000) as failed:
        services.conversations.send("Hello")
    assert "offered by the swarm's servers" in failed.args[0]

    # chosen again: a late answer to an earlier look at the swarm may have refreshed the list meanwhile
    picker.show_adapters(["greeter", "sql"])
    picker.adapter.setCurrentIndex(1)
    picker.adapter.activated.emit(1)
    assert services.backend.writer.adapter == "greeter"
    with qtbot.waitSignal(picker.adapter_requested) as back:
        picker.show_adapters(["sql"])  # the chosen adapter is no longer offered
    assert back.args == [None] and services.backend.writer.adapter is None


def test_the_next_start_uses_the_tuned_prompts_and_adapter_chosen_last_time(qtbot, monkeypatch, chat, tmp_path,
                                                                             default_model_path):
    services, window = chat
    picker = window.tuning
    model = ModelInfo.load(default_model_path)
    mine = tuned_file(tmp_path, model, model.hash, "mine.safetensors")
    pick(qtbot, monkeypatch, picker, mine, services.backend.tuned_chosen)
    picker.show_adapters(["greeter", "sql"])  # as the swarm would answer
    picker.adapter.setCurrentIndex(1)
    picker.adapter.activated.emit(1)
    picker.show_adapters(["sql"])  # a server left: replies go back to the base model, the choice is kept
    assert services.backend.writer.adapter is None
    assert (services.settings.tuned, services.settings.adapter) == (str(mine), "greeter")

    again = Services(services.settings, persist=False, local_spans=[(0, 30)])  # what was saved, read back
    app = TrayApp(again)
    qtbot.addWidget(app.tray.window)
    try:
        with qtbot.waitSignal(again.backend.tuned_chosen, timeout=120_000) as chosen:
            again.start()
        assert chosen.args == [mine] and again.backend.writer.tuned == mine
        second = app.open_chat()
        assert second.tuning.tuned_name.text() == "mine.safetensors"
        assert again.backend.writer.adapter is None  # until the swarm offers it
        second.tuning.show_adapters(["sql", "greeter"])
        assert second.tuning.current_adapter == "greeter" and again.backend.writer.adapter == "greeter"
    finally:
        app.quit()
    # A model card queued before quitting reaches the window afterwards: it asks nothing, raises nothing.
    second.tuning.adapters_wanted.emit()
    again.backend.measure([{"role": "user", "content": "hi"}])
