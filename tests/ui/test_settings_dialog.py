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
