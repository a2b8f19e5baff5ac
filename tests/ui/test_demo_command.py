"""`corolla demo` as a user runs it: a real process tree, ended with Ctrl-C, leaving nothing behind."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from corolla.ui.commands.app import READY_LINE

psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to the process")
def test_demo_opens_the_app_on_a_local_swarm_and_ctrl_c_stops_everything():
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "corolla.ui", "demo", "--window"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if READY_LINE in line:  # the swarm is up, then the app's event loop runs
                break
        assert any("local swarm is up" in line for line in lines), "".join(lines)
        assert any(READY_LINE in line for line in lines), "".join(lines)
        children = psutil.Process(proc.pid).children()
        commands = [" ".join(c.cmdline()) for c in children]
        assert sum(" serve " in c for c in commands) == 3 and sum(" bootstrap " in c for c in commands) == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
