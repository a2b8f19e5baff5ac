"""The swarm at a glance: block coverage above, the table of servers below, refreshed live."""

from __future__ import annotations

import time

from PySide6.QtCore import Signal, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from corolla.app.serve.stats import ServedStats
from corolla.app.swarm.snapshot import SwarmSnapshot
from corolla.p2p.names import format_blocks
from corolla.ui.block_coverage import BlockCoverage
from corolla.ui.server_table import ServerTable


class SwarmView(QWidget):
    closed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Corolla swarm")
        self.summary = QLabel("Looking for the swarm…", self)
        self.summary.setWordWrap(True)
        self.coverage = BlockCoverage(self)
        self.servers = ServerTable(self)
        layout = QVBoxLayout(self)
        self.own = QLabel(self)  # this PC's server: what it served (all runs)
        self.own.setWordWrap(True)
        self.own.hide()
        layout.addWidget(self.summary)
        layout.addWidget(self.own)
        layout.addWidget(QLabel("<b>Block coverage</b> (servers per block)", self))
        layout.addWidget(self.coverage)
        layout.addWidget(QLabel("<b>Servers</b>", self))
        layout.addWidget(self.servers, 1)
        self.resize(720, 460)
        self.snapshot: SwarmSnapshot | None = None
        self.own_peer = ""

    @Slot(str, object)
    def show_own(self, peer_id: str, stats: ServedStats) -> None:
        """Mark this PC's server (by its peer id) in the table and say what it has served."""
        self.own_peer = peer_id
        where = "serving now (marked below)" if peer_id else "not serving now"
        self.own.setText(f"<b>This PC</b>: {where}; served {stats.describe()} in all")
        self.own.show()
        if self.snapshot is not None:
            self.servers.show_servers(self.snapshot.servers, self.snapshot.left, self.own_peer,
                                      self.snapshot.paths)

    @Slot(object)
    def show_snapshot(self, snapshot: SwarmSnapshot) -> None:
        self.snapshot = snapshot
        self.coverage.show_coverage(snapshot.coverage())
        self.servers.show_servers(snapshot.servers, snapshot.left, self.own_peer, snapshot.paths)
        online = sum(1 for s in snapshot.servers if s.state == "online")
        missing = snapshot.missing_blocks()
        text = f"{snapshot.model}: {online} server{'s' if online != 1 else ''} online, {snapshot.num_blocks} blocks"
        if snapshot.error and snapshot.servers:
            text += f" — the last refresh failed ({snapshot.error}); showing the answer before it"
        elif snapshot.error:
            text += f" — {snapshot.error}"
        elif missing:
            text += f" — no server holds blocks {format_blocks(missing)}: the chat cannot run until one does"
        else:
            text += " — every block is served"
        self.summary.setText(f"{text}  (updated {time.strftime('%H:%M:%S')})")

    def closeEvent(self, event: QCloseEvent) -> None:
        self.closed.emit()
        super().closeEvent(event)

