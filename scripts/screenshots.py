"""Screenshots for the README, taken from the real app (offscreen) on a real local swarm.

First the dialogs: the first-run welcome, and Settings with bad values marked (as after OK). Then it
starts the demo swarm (blocks 15-29 served twice), ticks "Contribute" (a real fourth server), opens
the swarm view (this PC's server marked), and grabs the chat window: while a reply is streaming,
after a reply with a code block, after a reroute (the server in use is killed mid-reply), and in the
dark theme; last the tray menu with the stats the server counted. Writes docs/screenshots/*.png.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py [--dialogs-only]
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    data = tempfile.TemporaryDirectory(prefix="corolla-shots-")
    os.environ["COROLLA_DATA_DIR"] = os.environ["COROLLA_CONFIG_DIR"] = data.name

    from PySide6.QtCore import QEventLoop, QPoint, QTimer
    from PySide6.QtWidgets import QApplication, QWidget

    from corolla.app.contribute.state import Phase
    from corolla.app.demo.swarm import DemoSwarm
    from corolla.app.settings import Settings, default_bootstrap_peers
    from corolla.core.generation import CHAT_SAMPLING
    from corolla.ui.bridge.services import Services
    from corolla.ui.settings_dialog import SettingsDialog
    from corolla.ui.theme import apply_theme
    from corolla.ui.tray_app import TrayApp
    from corolla.ui.welcome_dialog import WelcomeDialog

    qt = QApplication.instance() or QApplication([])
    qt.setQuitOnLastWindowClosed(False)
    apply_theme(qt, "light")  # the style sheet the app uses (resources/style.qss)
    OUT.mkdir(parents=True, exist_ok=True)

    def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
        loop = QEventLoop()
        timer = QTimer()
        timer.timeout.connect(lambda: check() and loop.quit())
        timer.start(100)
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        loop.exec()
        timer.stop()
        if not check():
            raise SystemExit(f"gave up waiting for {what}")

    def pause(seconds: float) -> None:
        """Let Qt handle what is queued (a new palette reaches every widget by events)."""
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    def save(widget: QWidget, name: str) -> None:
        path = OUT / name
        widget.grab().save(str(path))
        print(f"wrote {path.relative_to(ROOT)}")

    def reply(chat, prompt: str, sampling, what: str) -> None:
        """Send `prompt` in a new conversation and wait for the whole reply."""
        wait_until(lambda: not services.conversations.busy, 60, "the previous reply to end")
        states: list[str] = []
        services.conversations.reply_finished.connect(states.append)
        services.conversations.new()
        services.conversations.set_sampling(sampling)
        chat.composer.editor.setPlainText(prompt)
        chat.composer.send_button.click()
        wait_until(lambda: bool(states), 300, what)
        services.conversations.reply_finished.disconnect(states.append)

    welcome = WelcomeDialog(default_bootstrap_peers())
    welcome.show()
    qt.processEvents()
    save(welcome, "welcome.png")
    welcome.close()
    dialog = SettingsDialog(Settings())
    dialog.show()
    dialog.blocks.setText("0:50")  # the default model has 30 blocks
    dialog.port.setText("31337x")
    dialog.try_accept()  # refused: both fields are marked, a sentence each
    qt.processEvents()
    save(dialog, "settings-error.png")
    dialog.close()
    if "--dialogs-only" in sys.argv:
        return 0

    with DemoSwarm(spans=((0, 15), (15, 30), (15, 30))) as swarm:
        settings = Settings(initial_peers=tuple(swarm.initial_peers), blocks="0:10", nickname="my-pc",
                            sampling=CHAT_SAMPLING.replace(temperature=0.3, max_new_tokens=120))
        services = Services(settings, persist=False)
        gui = TrayApp(services)
        gui.show()
        services.start()
        gui.menu.contribute_action.trigger()
        wait_until(lambda: services.contribution.state.phase is Phase.SERVING, 240, "the contributed server")

        swarm_view = gui.open_swarm()
        peer = services.contribution.state.peer_id
        wait_until(lambda: peer in swarm_view.servers.peers() and swarm_view.snapshot is not None
                   and not swarm_view.snapshot.error, 90, "the swarm view to list it")
        save(swarm_view, "swarm.png")

        chat = gui.open_chat()
        wait_until(lambda: bool(chat.models.models), 90, "the model selector to list the swarm's models")
        greedy = CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=90)
        reply(chat, "What is the capital of France?", greedy, "the first reply")
        services.conversations.set_sampling(CHAT_SAMPLING.replace(temperature=0.3, max_new_tokens=120))
        chat.composer.editor.setPlainText("Give me three ideas for a weekend in Paris.")
        tokens: list[str] = []
        services.backend.token.connect(lambda rid, text: tokens.append(text))
        chat.composer.send_button.click()
        wait_until(lambda: len(tokens) >= 25, 240, "the reply to stream")
        save(chat, "chat.png")
        services.conversations.stop()
        wait_until(lambda: not services.conversations.busy, 60, "the stopped reply to end")

        reply(chat, "Write a Python function that checks whether a number is prime.", greedy, "the code reply")
        save(chat, "chat-code.png")
        code_conversation = services.conversations.current

        routes: list[list] = []
        rerouted: list[str] = []
        services.backend.route_changed.connect(routes.append)
        services.backend.rerouted.connect(lambda text, details: rerouted.append(text))
        services.conversations.new()
        services.conversations.set_sampling(CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=70))
        chat.composer.editor.setPlainText("Explain how bridges are built, step by step.")
        before = len(tokens)
        chat.composer.send_button.click()
        wait_until(lambda: bool(routes) and len(tokens) >= before + 8, 240, "the reply to start")
        twins = {s.peer_id: s for s in swarm.servers[1:]}  # blocks 15-29: either can stand in for the other
        victim = next(twins[h.peer_id] for h in routes[-1] if h.peer_id in twins)
        victim.kill()
        wait_until(lambda: bool(rerouted), 120, "the reroute")
        wait_until(lambda: not services.conversations.busy, 240, "the rerouted reply to end")
        save(chat, "chat-reroute.png")

        apply_theme(qt, "dark")
        services.conversations.open(code_conversation)
        pause(1.0)
        save(chat, "chat-dark.png")
        apply_theme(qt, "light")

        try:  # the tray menu with what the contributed server counted, once it served a step
            wait_until(lambda: services.contribution.stats.tokens > 0, 60, "the server to count what it served")
        except SystemExit:
            print("the contributed server served nothing yet: the tray menu shows zero")
        gui.menu.popup(QPoint(0, 0))
        wait_until(lambda: gui.menu.isVisible(), 5, "the menu")
        save(gui.menu, "tray-menu.png")
        gui.menu.hide()
        if gui.tray.window is not None:
            save(gui.tray.window, "menu-window.png")
        gui.quit()
    data.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
