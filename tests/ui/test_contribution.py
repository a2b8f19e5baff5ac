"""The contribution controller with real server processes: one that fails, one orphaned."""

import subprocess
import sys
from pathlib import Path

import pytest

from corolla.app.contribute.state import Phase
from corolla.app.settings import Settings
from corolla.ui.bridge.contribution import ContributionController


@pytest.mark.slow
def test_a_server_that_fails_shows_why(qtbot):
    """A real `corolla serve` that refuses its settings: the state says error and the server's reason."""
    c = ContributionController()
    states = []
    c.state_changed.connect(states.append)
    with qtbot.waitSignal(c.state_changed, check_params_cb=lambda s: s.phase is Phase.ERROR, timeout=60000):
        c.start(Settings(device="cuda:7"))  # no such GPU here (nor on most machines)
    assert states[0].phase is Phase.STARTING
    assert "CUDA" in c.state.error or "cuda" in c.state.error
    assert "error: " in c.state.describe()
    c.stop()  # acknowledging the error turns the toggle off
    assert c.state.phase is Phase.OFF


CRASHING_APP = """
import os, sys
from PySide6.QtCore import QCoreApplication, QTimer
from corolla.app.contribute.state import Phase
from corolla.ui.bridge.contribution import ContributionController
from corolla.app.settings import Settings
qt = QCoreApplication([])
c = ContributionController()
def check():
    if c.state.phase is Phase.SERVING:
        print(c.pid, flush=True)
        os._exit(1)  # the app crashes: no stop, no cleanup
    if c.state.phase is Phase.ERROR:
        print("error", c.state.error, flush=True)
        os._exit(2)
timer = QTimer(); timer.timeout.connect(check); timer.start(100)
c.start(Settings(blocks="0:1"))
qt.exec()
"""


@pytest.mark.slow
def test_the_server_ends_when_the_app_that_started_it_crashes():
    psutil = pytest.importorskip("psutil")
    root = Path(__file__).resolve().parents[2]
    app = subprocess.run([sys.executable, "-c", CRASHING_APP], cwd=root, capture_output=True, text=True,
                         timeout=180, check=False)
    assert app.returncode == 1, app.stdout + app.stderr
    server = psutil.Process(int(app.stdout.split()[0]))
    try:
        server.wait(timeout=30)  # it saw its stdin close and left
    except psutil.TimeoutExpired:
        server.kill()
        pytest.fail("the server outlived the app that started it")
