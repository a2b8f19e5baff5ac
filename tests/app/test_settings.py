import json

import pytest

from corolla.app import settings as settings_file
from corolla.app.errors import SettingsError
from corolla.app.paths import config_dir
from corolla.app.settings import Settings, block_range
from corolla.core.generation import CHAT_SAMPLING

PEER = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWEjqq2Jvhq87y75M4jHXoztEX7846jLQEdMf6MXnm8zWG"


def test_defaults_when_no_file_and_saved_in_config_dir(corolla_dirs):
    assert settings_file.load() == Settings()
    s = Settings().replace(initial_peers=(PEER,), blocks="0:10", port=31337, contribute=True,
                           sampling=CHAT_SAMPLING.replace(temperature=0.2, top_k=0))
    path = settings_file.save(s)
    assert path.parent == config_dir() == corolla_dirs / "config"
    assert settings_file.load() == s


@pytest.mark.parametrize("change, words", [
    ({"port": 70000}, "port"),
    ({"port": -1}, "port"),
    ({"device": "gpu0"}, "device"),
    ({"blocks": "10:5"}, "blocks"),
    ({"blocks": "ten"}, "blocks"),
    ({"num_blocks": 0}, "number of blocks"),
    ({"model": " "}, "model"),
    ({"initial_peers": ("/ip4/1.2.3.4/tcp/1",)}, "/p2p/"),
    ({"initial_peers": ("not an address",)}, "multiaddress"),
    ({"sampling": CHAT_SAMPLING.replace(top_p=0.0)}, "top-p"),
    ({"sampling": CHAT_SAMPLING.replace(temperature="hot")}, "temperature"),
    ({"sampling": CHAT_SAMPLING.replace(max_new_tokens=0)}, "max new tokens"),
])
def test_invalid_values_are_refused_with_the_setting_named(change, words):
    with pytest.raises(SettingsError, match=words):
        Settings().replace(**change)


def test_invalid_file_is_refused_not_replaced(corolla_dirs):
    path = config_dir() / settings_file.SETTINGS_FILE
    path.write_text(json.dumps({"port": "eighty"}))
    with pytest.raises(SettingsError, match="port"):
        settings_file.load()
    path.write_text(json.dumps({"colour": "blue"}))
    with pytest.raises(SettingsError, match="unknown setting"):
        settings_file.load()
    path.write_text("{not json")
    with pytest.raises(SettingsError, match="cannot read"):
        settings_file.load()
    assert path.read_text() == "{not json"  # left for the user to fix


def test_save_refuses_invalid_settings_and_keeps_the_old_file():
    good = Settings(port=1234)
    path = settings_file.save(good)
    bad = Settings(port=99999)
    with pytest.raises(SettingsError):
        settings_file.save(bad)
    assert settings_file.load(path) == good


def test_block_range():
    assert block_range("3:7") == (3, 7)
