import pytest

from corolla.app.settings import Settings
from corolla.ui.settings_dialog import SettingsDialog

PEER = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWEjqq2Jvhq87y75M4jHXoztEX7846jLQEdMf6MXnm8zWG"


@pytest.fixture
def dialog(qtbot):
    d = SettingsDialog(Settings())
    qtbot.addWidget(d)
    d.show()
    return d


@pytest.mark.parametrize("field, value, words", [
    ("port", "http", "port"),
    ("blocks", "9:3", "blocks"),
    ("peers", "/ip4/1.2.3.4/tcp/5", "/p2p/"),
    ("model", "", "model"),
])
def test_invalid_values_keep_the_dialog_open_with_the_reason(qtbot, dialog, field, value, words):
    widget = getattr(dialog, field)
    widget.setPlainText(value) if field == "peers" else widget.setText(value)
    with qtbot.assertNotEmitted(dialog.accepted_settings):
        dialog.try_accept()
    assert dialog.isVisible()
    assert dialog.error.isVisible() and words in dialog.error.text()


def test_valid_values_are_emitted(qtbot, dialog):
    dialog.peers.setPlainText(PEER + "\n\n")
    dialog.device.setCurrentText("cuda:1")
    dialog.num_blocks.setValue(12)
    with qtbot.waitSignal(dialog.accepted_settings) as got:
        dialog.try_accept()
    s = got.args[0]
    assert (s.initial_peers, s.device, s.num_blocks, s.blocks) == ((PEER,), "cuda:1", 12, "")
    assert not dialog.isVisible()


def test_every_bad_field_is_marked_at_once_and_the_model_is_checked(qtbot, dialog, tmp_path):
    dialog.model.setText(str(tmp_path / "no-such-model"))
    dialog.blocks.setText("0:50")
    dialog.port.setText("http")
    with qtbot.assertNotEmitted(dialog.accepted_settings):
        dialog.try_accept()
    problems = dialog.problems()
    assert set(problems) == {dialog.model, dialog.port}  # blocks are checked once the model is known
    assert "cannot be used" in dialog.error.text() and "port" in dialog.error.text()
    assert "b00020" in dialog.model.styleSheet() and "b00020" in dialog.port.styleSheet()
    assert "Error" not in dialog.error.text() and "Traceback" not in dialog.error.text()

    dialog.model.setText("default")
    dialog.port.setText("0")
    with qtbot.assertNotEmitted(dialog.accepted_settings):
        dialog.try_accept()
    assert "has 30 blocks" in dialog.error.text() and "b00020" in dialog.blocks.styleSheet()
    assert dialog.model.styleSheet() == ""
    dialog.blocks.setText("0:30")
    with qtbot.waitSignal(dialog.accepted_settings):
        dialog.try_accept()


def test_caps_and_start_at_login_are_saved_and_a_cap_with_fixed_blocks_is_marked(qtbot, dialog, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    dialog.blocks.setText("0:10")
    dialog.max_gpu_memory.setValue(2.5)
    with qtbot.assertNotEmitted(dialog.accepted_settings):
        dialog.try_accept()
    assert set(dialog.problems()) == {dialog.max_gpu_memory}
    assert "leave Blocks empty" in dialog.error.text() and "b00020" in dialog.max_gpu_memory.styleSheet()
    dialog.blocks.setText("")
    dialog.cpu_threads.setValue(2)
    dialog.start_at_login.setChecked(True)
    with qtbot.waitSignal(dialog.accepted_settings) as got:
        dialog.try_accept()
    s = got.args[0]
    assert (s.max_gpu_memory, s.cpu_threads, s.start_at_login) == (2.5, 2, True)


def test_the_start_at_login_box_writes_the_login_item(qtbot, tmp_path, monkeypatch):
    import sys

    from corolla.app.contribute.autostart import autostart_file, starts_at_login
    from corolla.ui.bridge.services import Services

    if not sys.platform.startswith("linux"):
        pytest.skip("the XDG autostart file")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    services = Services(Settings())
    try:
        services.apply_settings(services.settings.replace(start_at_login=True))
        assert starts_at_login() and autostart_file().read_text().startswith("[Desktop Entry]")
        services.apply_settings(services.settings.replace(start_at_login=False))
        assert not starts_at_login() and not services.settings.start_at_login
    finally:
        services.shutdown()
