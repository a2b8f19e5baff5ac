"""`corolla app` (also plain `corolla`): the tray app with its chat window. The GUI's composition root."""

from __future__ import annotations

import argparse
from collections.abc import Callable

READY_LINE = "corolla: the app is running"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start the tray app (the default command)")
    add_gui_arguments(p)
    p.set_defaults(func=run)


def add_gui_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--initial-peers", nargs="*", default=None,
                   help="join this swarm for this run (multiaddrs; the saved settings are not changed)")
    p.add_argument("--local", default=None, metavar="SPANS",
                   help="chat without a swarm: run these spans in this process, e.g. 0:30")
    p.add_argument("--window", action="store_true", help="show the menu in a window even if a tray exists")
    p.add_argument("--open-chat", action="store_true", help="open the chat window at start")
    p.add_argument("--theme", choices=["auto", "light", "dark"], default="auto",
                   help="colours (auto: follow the desktop's light or dark setting)")


def run(args: argparse.Namespace) -> int:
    return start_gui(args)


def start_gui(args: argparse.Namespace, initial_peers: list[str] | None = None,
              on_quit: Callable[[], None] | None = None) -> int:
    """Build the app's services, then the widgets on top, and run Qt's event loop."""
    import sys

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    qt = QApplication.instance() or QApplication(sys.argv[:1])
    qt.setApplicationName("Corolla")
    qt.setQuitOnLastWindowClosed(False)  # the tray keeps running with no window open
    from corolla.ui.theme import apply_theme

    apply_theme(qt, getattr(args, "theme", "auto"))
    # Before the heavy imports: a Ctrl-C during them was swallowed by some library's import code.
    stop: list[Callable[[], None]] = []  # what Ctrl-C calls; empty until the GUI exists
    interrupted: list[bool] = []
    _quit_on_signals(lambda: stop[0]() if stop else interrupted.append(True))

    from corolla.app import settings as settings_file
    from corolla.ui.bridge.services import Services
    peers = initial_peers if initial_peers is not None else args.initial_peers
    settings, persist = None, True
    if peers:
        settings = settings_file.load().replace(initial_peers=tuple(peers))
        persist = False  # a one-off swarm must not overwrite the user's saved choice
    spans = None
    if args.local:
        from corolla.core.chain import parse_spans
        from corolla.core.model import ModelInfo, resolve_model

        spans = parse_spans(args.local, ModelInfo.load(resolve_model(settings.model if settings else "default")
                                                      ).num_blocks)
    services = Services(settings, persist=persist, local_spans=spans)

    from corolla.ui.tray_app import TrayApp  # the widgets, on top of the services

    gui = TrayApp(services, force_window=args.window)
    # Queued, so a Ctrl-C that lands before the event loop runs still ends it (quit() before exec() is lost).
    stop.append(lambda: QTimer.singleShot(0, gui.quit))
    if interrupted:  # Ctrl-C while starting
        gui.quit()
        return 130
    gui.show()
    services.start()
    if args.open_chat:
        gui.open_chat()
    if on_quit is not None:
        gui.quit_requested.connect(on_quit)
    # Once the event loop runs, the app is up: say so (launchers and tests wait for this line).
    QTimer.singleShot(0, lambda: print(READY_LINE, flush=True))
    try:
        return int(qt.exec())
    finally:
        gui.quit()


def _quit_on_signals(quit_app: Callable[[], None]) -> None:
    """Ctrl-C (and SIGTERM where it exists) quit cleanly: servers started by the app are stopped.

    Qt's event loop runs no Python code by itself, so a timer wakes the interpreter to let the
    signal handler run.
    """
    import signal

    from PySide6.QtCore import QTimer

    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda *_: quit_app())
    waker = QTimer()
    waker.timeout.connect(lambda: None)
    waker.start(250)
    _quit_on_signals.waker = waker  # type: ignore[attr-defined]  # kept alive with the app
