"""The contribution controller's parsing, and real server processes: one that fails, one orphaned."""

import subprocess
import sys
from pathlib import Path

import pytest

from corolla.app.settings import Settings
from corolla.ui.bridge.contribution import (
    ContributionController,
    ContributionState,
    Phase,
    parse_line,
    server_arguments,
)

PEER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBdmqXbZzXdKMvH"
BOOT = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWEjqq2Jvhq87y75M4jHXoztEX7846jLQEdMf6MXnm8zWG"


def test_server_output_becomes_state():
    s = ContributionState(Phase.STARTING)
    s = parse_line("loading blocks 0:10 of SmolLM2-135M-Instruct (30 blocks) on cpu", s)
    assert s.describe() == "starting (loading blocks 0–9)…"
    s = parse_line(f"serving blocks 0:10 of SmolLM2-135M-Instruct (hash b4a0) as {PEER}; 12.36 ms per block", s)
    assert (s.phase, s.start, s.end, s.peer_id) == (Phase.SERVING, 0, 10, PEER)
    assert s.describe() == "serving blocks 0–9, 0 sessions"
    s = parse_line("2026-11-28 INFO corolla.server: session opened 1a2b3c4d blocks 0:10 max_length 90 (2 active)", s)
    assert s.describe() == "serving blocks 0–9, 2 sessions"
    s = parse_line("2026-11-28 INFO corolla.server: session closed 1a2b3c4d (1 active)", s)
    assert s.describe() == "serving blocks 0–9, 1 session"
    assert parse_line("server listening on /ip4/127.0.0.1/tcp/1", s) == s
    s = parse_line(f"started a new swarm; others join with: --initial-peers {BOOT}", s)
    assert s.join_address == BOOT


def test_settings_become_serve_arguments(tmp_path):
    key = tmp_path / "k"
    args = server_arguments(Settings(initial_peers=(BOOT,), blocks="5:9", port=31337, device="cuda"), key)
    assert args == ["serve", "--model", "default", "--port", "31337", "--identity", str(key),
                    "--blocks", "5:9", "--device", "cuda", "--initial-peers", BOOT]
    assert "--num-blocks" in server_arguments(Settings(num_blocks=4), key)


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
from corolla.ui.bridge.contribution import ContributionController, Phase
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
