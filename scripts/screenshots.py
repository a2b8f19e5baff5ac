"""Screenshots for the README, taken from the real app (offscreen) on a real local swarm.

First the dialogs: the first-run welcome, and Settings with bad values marked (as after OK). Then
it starts the demo swarm, ticks "Contribute" (a real fourth server, serving every block), opens the
swarm view (this PC's server marked), grabs the chat window while a reply is streaming, and the
tray menu with the stats the server counted. Writes docs/screenshots/*.png.

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
    from corolla.ui.tray_app import TrayApp
    from corolla.ui.welcome_dialog import WelcomeDialog

    qt = QApplication.instance() or QApplication([])
    qt.setQuitOnLastWindowClosed(False)
    from corolla.ui.theme import apply_theme

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

    def save(widget: QWidget, name: str) -> None:
        path = OUT / name
        widget.grab().save(str(path))
        print(f"wrote {path.relative_to(ROOT)}")

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

    with DemoSwarm() as swarm:
        # Serving every block, the contributed server is the shortest route: the chat goes through it.
        settings = Settings(initial_peers=tuple(swarm.initial_peers), blocks="0:30",
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
        finished = QEventLoop()
        services.conversations.reply_finished.connect(lambda state: finished.quit())
        chat.composer.editor.setPlainText("What is the capital of France?")
        chat.composer.send_button.click()
        finished.exec()
        services.conversations.set_sampling(CHAT_SAMPLING.replace(temperature=0.3, max_new_tokens=120))
        chat.composer.editor.setPlainText("Give me three ideas for a weekend in Paris.")
        tokens: list[str] = []
        services.backend.token.connect(lambda rid, text: tokens.append(text))
        chat.composer.send_button.click()
        wait_until(lambda: len(tokens) >= 25, 240, "the reply to stream")
        save(chat, "chat.png")

        wait_until(lambda: services.contribution.stats.tokens > 0, 60, "the server to count what it served")
        gui.menu.popup(QPoint(0, 0))
        wait_until(lambda: gui.menu.isVisible(), 5, "the menu")
        save(gui.menu, "tray-menu.png")
        gui.menu.hide()
        if gui.tray.window is not None:
            save(gui.tray.window, "menu-window.png")
        services.conversations.stop()
        gui.quit()
    data.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
