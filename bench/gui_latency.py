"""How smooth the GUI stays while a reply streams from a local swarm.

A 5 ms Qt timer beats in the GUI thread; every gap between beats longer than the interval is a
stall of the event loop. Measured first with the chat window open and idle (the baseline), then
while tokens stream from a swarm of real processes into the same window. Target: longest stall
under 50 ms.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui_latency.py [--tokens 48] [--initial-peers ADDR]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BEAT_MS = 5
TARGET_MS = 50.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=48, help="tokens to stream")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle baseline")
    p.add_argument("--initial-peers", nargs="*", default=None, help="use this swarm instead of starting one")
    args = p.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    data = tempfile.TemporaryDirectory(prefix="corolla-bench-")
    os.environ["COROLLA_DATA_DIR"] = os.environ["COROLLA_CONFIG_DIR"] = data.name

    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from corolla.app.demo.swarm import DemoSwarm
    from corolla.app.settings import Settings
    from corolla.core.generation import CHAT_SAMPLING
    from corolla.ui.bridge.services import Services
    from corolla.ui.tray_app import TrayApp

    qt = QApplication.instance() or QApplication([])
    qt.setQuitOnLastWindowClosed(False)
    swarm = None
    peers = args.initial_peers
    if not peers:
        swarm = DemoSwarm()
        peers = swarm.start(progress=lambda text: print(text, file=sys.stderr))
    try:
        settings = Settings(initial_peers=tuple(peers),
                            sampling=CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=args.tokens))
        services = Services(settings, persist=False)
        gui = TrayApp(services)
        chat = gui.open_chat()

        beats: list[float] = []
        clock = QElapsedTimer()
        clock.start()
        heart = QTimer()
        heart.setInterval(BEAT_MS)
        heart.timeout.connect(lambda: beats.append(clock.nsecsElapsed() / 1e6))

        def run_for(seconds: float) -> None:
            loop = QEventLoop()
            QTimer.singleShot(int(seconds * 1000), loop.quit)
            loop.exec()

        # warm-up: the head loads and the swarm connection opens before anything is measured
        with_reply = QEventLoop()
        services.conversations.reply_finished.connect(lambda state: with_reply.quit())
        services.conversations.error.connect(lambda why: print("error:", why, file=sys.stderr))
        services.conversations.set_sampling(CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=2))
        chat.composer.editor.setPlainText("Hello!")
        chat.composer.send_button.click()
        with_reply.exec()

        heart.start()
        run_for(args.idle)
        idle = gaps(beats)

        beats.clear()
        tokens: list[str] = []
        services.backend.token.connect(lambda rid, text: tokens.append(text))
        services.conversations.set_sampling(CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=args.tokens))
        chat.composer.editor.setPlainText("Write a long poem about the sea.")
        t0 = time.perf_counter()
        chat.composer.send_button.click()
        with_reply.exec()
        seconds = time.perf_counter() - t0
        streaming = gaps(beats)
        heart.stop()
        gui.quit()
    finally:
        if swarm is not None:
            swarm.stop()
        data.cleanup()

    print(f"{'phase':<22}{'beats':>7}{'longest stall ms':>18}{'p99 ms':>9}{'median ms':>11}")
    for name, g in (("idle window (baseline)", idle), (f"streaming {len(tokens)} tokens", streaming)):
        print(f"{name:<22}{len(g):>7}{max(g):>18.1f}{pct(g, 99):>9.1f}{statistics.median(g):>11.1f}")
    print(f"streaming: {len(tokens) / seconds:.2f} tokens/s through the swarm; "
          f"longest stall {max(streaming) / max(idle):.2f}x the idle baseline; "
          f"target under {TARGET_MS:.0f} ms: {'met' if max(streaming) < TARGET_MS else 'NOT met'}")
    return 0


def gaps(beats: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(beats)] or [0.0]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q / 100))]


if __name__ == "__main__":
    sys.exit(main())
