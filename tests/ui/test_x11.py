"""The GUI on a real X server (Xvfb), not offscreen: it starts, and when it is killed, nothing it
started is left behind — no server process, no folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from corolla.ui.commands.app import READY_LINE

psutil = pytest.importorskip("psutil")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb (apt install xvfb)"),
              pytest.mark.skipif(sys.platform == "win32", reason="X11 and SIGKILL")]


@pytest.fixture
def x_display():
    """A real X server on a free display number, for this test only."""
    for number in range(90, 140):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            break
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        assert server.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
        time.sleep(0.1)
    yield f":{number}"
    server.terminate()
    server.wait(10)


def test_a_killed_demo_leaves_no_server_and_no_folder(x_display, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}  # the xcb platform, for real
    env.update(DISPLAY=x_display, PYTHONUNBUFFERED="1")
    temp_before = set(Path(tempfile.gettempdir()).glob("corolla-demo-*"))
    data_before = set(Path(env["COROLLA_DATA_DIR"]).rglob("*")) if Path(env["COROLLA_DATA_DIR"]).exists() else set()
    gui = subprocess.Popen([sys.executable, "-m", "corolla.ui", "demo", "--window"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in gui.stdout:
            lines.append(line)
            if READY_LINE in line:
                break
        assert any(READY_LINE in line for line in lines), "".join(lines[-40:])
        assert "platform plugin" not in "".join(lines)  # Qt's xcb platform loaded
        children = psutil.Process(gui.pid).children(recursive=True)
        assert sum("serve" in c.cmdline() for c in children) == 3 and sum("bootstrap" in c.cmdline() for c in children) == 1
    finally:
        gui.send_signal(signal.SIGKILL)  # a crash: no clean-up code runs in the GUI
        gui.wait(10)
    _, alive = psutil.wait_procs(children, timeout=60)
    for p in alive:
        p.kill()
    assert alive == [], [" ".join(p.cmdline()) for p in alive]
    assert set(Path(tempfile.gettempdir()).glob("corolla-demo-*")) == temp_before
    data_after = set(Path(env["COROLLA_DATA_DIR"]).rglob("*")) if Path(env["COROLLA_DATA_DIR"]).exists() else set()
    assert not any("demo" in p.name or p.suffix == ".key" for p in data_after - data_before), data_after - data_before
