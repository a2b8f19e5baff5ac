"""The one-folder bundle `make bundle` builds, run as a user runs it: no Python of ours, no checkout.

Skipped until the bundle exists (building it takes many minutes, so CI does not). The first-run path
is real: an empty cache, so the demo converts the default model carried inside the bundle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest

from corolla.app.serve.child import FROZEN_FLAG
from corolla.ui.commands.app import READY_LINE
from tests.ui.test_x11 import x_display  # noqa: F401 (a fixture: a real X server)

psutil = pytest.importorskip("psutil")
ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "build" / "bundle" / "dist" / "corolla"
EXECUTABLE = BUNDLE / ("corolla.exe" if sys.platform == "win32" else "corolla")
# `make bundle` sets COROLLA_BUNDLE_REQUIRED: there a missing bundle is a failure, not a skip.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not EXECUTABLE.is_file() and not os.environ.get("COROLLA_BUNDLE_REQUIRED"),
                                 reason=f"no bundle at {EXECUTABLE.relative_to(ROOT)}: `make bundle` builds it")]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One empty model cache for this module: the first bundled run prepares the default model in it."""
    return tmp_path_factory.mktemp("bundle-cache")


def bundle_env(cache: Path, **extra: str) -> dict[str, str]:
    """The test's user dirs, this module's cache, and nothing that points at the checkout's Python."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "QT_QPA_PLATFORM", "QT_PLUGIN_PATH")}
    return {**env, "COROLLA_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1", **extra}


def bundle_processes() -> list[psutil.Process]:
    """Processes running the bundle's executable (the app and its children)."""
    found = []
    for p in psutil.process_iter(["exe"]):
        try:
            if p.info["exe"] and Path(p.info["exe"]).resolve() == EXECUTABLE.resolve():
                found.append(p)
        except (psutil.Error, OSError):
            pass
    return found


def test_the_bundle_says_its_version():
    run = subprocess.run([str(EXECUTABLE), "--version"], capture_output=True, text=True, timeout=120,
                         cwd=BUNDLE.parent, env=bundle_env(Path("unused")))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == f"corolla {version('corolla')}"


def test_the_bundled_headless_demo_prepares_the_model_and_answers(cache_dir):
    run = subprocess.run([str(EXECUTABLE), "demo", "--headless", "--max-new-tokens", "12"],
                         input="What is the capital of France?\n", capture_output=True, text=True,
                         timeout=900, cwd=BUNDLE.parent, env=bundle_env(cache_dir))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "preparing model 'default'" in out  # from the GGUF file inside the bundle, not a download
    assert all(f"server {i} (blocks" in out for i in range(3)), out[-4000:]
    reply = out.split("assistant> ", 1)[1].split("\nyou>", 1)[0]
    assert reply.strip(), out[-4000:]  # the three bundled servers produced text
    _, alive = psutil.wait_procs(bundle_processes(), timeout=30)
    assert alive == [], [p.cmdline() for p in alive]


def test_the_bundled_api_answers_an_openai_request(cache_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = subprocess.Popen([str(EXECUTABLE), "api", "--local", "0:30", "--port", str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=BUNDLE.parent,
                           env=bundle_env(cache_dir))
    lines: list[str] = []
    try:
        for line in api.stdout:
            lines.append(line)
            if (ready := re.search(r"on (http://\S+/v1)", line)) is not None:
                break
        assert ready is not None, "".join(lines[-40:])
        body = json.dumps({"model": "default", "max_tokens": 8, "temperature": 0,
                           "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        request = urllib.request.Request(ready.group(1) + "/chat/completions", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            answer = json.load(response)
        assert answer["choices"][0]["message"]["content"].strip(), answer
    finally:
        api.terminate()
        try:
            api.wait(30)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait(10)


@pytest.mark.skipif(shutil.which("Xvfb") is None or sys.platform == "win32", reason="needs Xvfb")
def test_the_bundled_gui_starts_on_a_real_x_server_and_quits_with_its_children(x_display, cache_dir):  # noqa: F811
    gui = subprocess.Popen([str(EXECUTABLE), "demo", "--window"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, cwd=BUNDLE.parent,
                           env=bundle_env(cache_dir, DISPLAY=x_display))
    lines: list[str] = []
    try:
        for line in gui.stdout:
            lines.append(line)
            if READY_LINE in line:
                break
        out = "".join(lines)
        assert READY_LINE in out, out[-4000:]
        assert "platform plugin" not in out  # the bundle's own xcb platform plugin loaded
        children = psutil.Process(gui.pid).children(recursive=True)
        # servers and the bootstrap peer are the bundle's executable in its child role
        assert len(children) == 4 and all(Path(c.cmdline()[0]).resolve() == EXECUTABLE.resolve()
                                          and c.cmdline()[1] == FROZEN_FLAG for c in children), \
            [c.cmdline() for c in children]
        gui.send_signal(signal.SIGTERM)  # the app quits as on Ctrl-C and stops its swarm
        assert gui.wait(120) == 0, "".join(lines[-40:]) + gui.stdout.read()[-4000:]
    finally:
        if gui.poll() is None:
            gui.kill()
            gui.wait(10)
    _, alive = psutil.wait_procs(children, timeout=60)
    for p in alive:
        p.kill()
    assert alive == [], [p.cmdline() for p in alive]
