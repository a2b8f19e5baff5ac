"""A new user's first run on a real X server with a real tray host: `corolla` starts, its icon is
embedded in the tray (trayer), the welcome dialog asks where to connect, the user picks "Start a
swarm on this PC" and chats; a reply arrives from the server the app started.

The test drives the app from outside, as a user would: key presses and clicks go through the X
server (xdotool uses the XTEST extension), never through the app's objects. It reads only what the
app leaves for the user: its windows on the X server, its settings file, its chat history and the
contributed server's stats file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from corolla.ui.commands.app import READY_LINE

psutil = pytest.importorskip("psutil")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11"),
              pytest.mark.skipif(any(shutil.which(t) is None for t in ("Xvfb", "trayer", "xdotool", "xwininfo")),
                                 reason="needs Xvfb, trayer, xdotool and xwininfo (packaging/setup-dev.sh)")]

T = TypeVar("T")
QUESTION = "What is the capital of France?"
# One line of `xwininfo -tree`: id, name, (instance, class), WxH+x+y, +absolute x+absolute y
_TREE_LINE = re.compile(r"^\s*(0x[0-9a-f]+) .*\(\"[^\"]*\" \"Corolla\"\)\s+(\d+)x(\d+)\+-?\d+\+-?\d+\s+\+(-?\d+)\+(-?\d+)")


def wait_for(check: Callable[[], T], timeout: float, what: str, log: list[str]) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}; the app said:\n" + "".join(log[-40:]))


@pytest.fixture
def display():
    """A real X server on a free display number, with a tray host (trayer) docked at its top right."""
    for number in range(150, 200):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            break
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tray = None
    try:
        deadline = time.monotonic() + 20
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            assert server.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.1)
        env = {**os.environ, "DISPLAY": f":{number}"}
        tray = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width",
                                 "200", "--heighttype", "pixel", "--height", "32"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield f":{number}"
    finally:
        if tray is not None:
            tray.terminate()
            tray.wait(10)
        server.terminate()
        server.wait(10)


def x(display: str, *args: str, check: bool = True) -> str:
    """Run an X client tool (xdotool, xwininfo) on `display`; its output."""
    result = subprocess.run(list(args), env={**os.environ, "DISPLAY": display}, capture_output=True, text=True,
                            timeout=30, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stderr}")
    return result.stdout


def window(display: str, title: str) -> str:
    """The id of the visible window called exactly `title`, or ""."""
    found = x(display, "xdotool", "search", "--onlyvisible", "--name", f"^{title}$", check=False).split()
    return found[0] if found else ""


def tray_icon(display: str) -> tuple[int, int] | None:
    """The centre of Corolla's icon where the tray host embedded it (inside trayer's panel), if viewable."""
    panel = x(display, "xdotool", "search", "--name", "^panel$", check=False).split()
    if not panel:
        return None
    for line in x(display, "xwininfo", "-tree", "-id", panel[0]).splitlines():
        m = _TREE_LINE.match(line)
        if m and int(m.group(2)) >= 16 and int(m.group(3)) >= 16:
            if "IsViewable" in x(display, "xwininfo", "-id", m.group(1)):
                return int(m.group(4)) + int(m.group(2)) // 2, int(m.group(5)) + int(m.group(3)) // 2
    return None


def reply(history: Path) -> tuple[str, str] | None:
    """The first question and the finished reply in the app's chat history, once the reply is complete."""
    if not history.exists():
        return None
    with sqlite3.connect(f"file:{history}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT role, content, state FROM messages ORDER BY id").fetchall()
    user = [content for role, content, _ in rows if role == "user"]
    done = [content for role, content, state in rows if role == "assistant" and state != "streaming"]
    return (user[0], done[0]) if user and done else None


def test_first_run_with_a_tray_start_a_swarm_here_and_chat(display):
    config, data = Path(os.environ["COROLLA_CONFIG_DIR"]), Path(os.environ["COROLLA_DATA_DIR"])
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}  # the xcb platform, for real
    env.update(DISPLAY=display, PYTHONUNBUFFERED="1")
    entry = Path(sys.executable).with_name("corolla")  # the installed `corolla` command
    command = [str(entry)] if entry.exists() else [sys.executable, "-m", "corolla.ui"]
    gui = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(gui.stdout), daemon=True).start()
    children: list = []
    try:
        wait_for(lambda: any(READY_LINE in line for line in log) or gui.poll() is not None, 180, "the app", log)
        assert gui.poll() is None, "".join(log)
        icon = wait_for(lambda: tray_icon(display), 30, "the icon in the tray", log)

        welcome = wait_for(lambda: window(display, "Welcome to Corolla"), 30, "the welcome dialog", log)
        x(display, "xdotool", "windowfocus", "--sync", welcome)
        x(display, "xdotool", "key", "alt+s")  # the button's mnemonic: "&Start a swarm on this PC"
        wait_for(lambda: not window(display, "Welcome to Corolla"), 30, "the welcome dialog to close", log)
        saved = json.loads((config / "settings.json").read_text())
        assert saved["welcomed"] and saved["contribute"] and saved["initial_peers"] == []
        assert saved["blocks"] == "0:30"  # the whole default model on this PC
        stats = data / "identity" / "server.stats.json"  # written once the server serves
        wait_for(stats.exists, 300, "the server on this PC to serve", log)
        children = psutil.Process(gui.pid).children(recursive=True)
        assert any("serve" in c.cmdline() for c in children)

        x(display, "xdotool", "mousemove", str(icon[0]), str(icon[1]), "click", "1")  # a left click: the chat
        chat = wait_for(lambda: window(display, "Corolla chat"), 60, "the chat window", log)
        x(display, "xdotool", "windowfocus", "--sync", chat)
        x(display, "xdotool", "type", "--delay", "20", QUESTION)
        x(display, "xdotool", "key", "Return")
        question, answer = wait_for(lambda: reply(data / "history.sqlite3"), 300, "the reply", log)
        assert question == QUESTION
        assert answer.strip() and "[failed]" not in answer, answer
        served = wait_for(lambda: json.loads(stats.read_text())["tokens"], 60, "the server to count the reply", log)
        assert served > len(QUESTION.split())
    finally:
        children = children or psutil.Process(gui.pid).children(recursive=True)
        gui.send_signal(signal.SIGTERM)  # quits as the tray's Quit does
        try:
            gui.wait(60)
        except subprocess.TimeoutExpired:
            gui.kill()
    _, alive = psutil.wait_procs(children, timeout=30)
    for p in alive:
        p.kill()
    assert alive == []  # the server left with the app
