import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def corolla_dirs(tmp_path, monkeypatch):
    """Settings and history go to this test's tmp_path, never into the real user dirs."""
    monkeypatch.setenv("COROLLA_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("COROLLA_DATA_DIR", str(tmp_path / "data"))
    return tmp_path
