"""The swarm's servers: peer, blocks, state, throughput, sessions, latency."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from corolla.app.swarm.snapshot import ServerRow

COLUMNS = ["Peer", "Blocks", "State", "Tokens/s", "Sessions", "Latency"]


class ServerTable(QTableWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.setSortingEnabled(False)

    @Slot(list)
    def show_servers(self, servers: list[ServerRow]) -> None:
        rows = sorted(servers, key=lambda s: (s.start, s.end, s.peer))
        self.setRowCount(len(rows))
        for r, s in enumerate(rows):
            cells = [
                s.peer,
                f"{s.start}–{s.end - 1}" if s.end > s.start else "?",
                s.state,
                "–" if s.throughput is None else f"{s.throughput:.1f}",
                "–" if s.sessions is None else str(s.sessions),
                "–" if s.latency_ms is None else f"{s.latency_ms:.1f} ms",
            ]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == 0:
                    item.setToolTip(s.peer)
                self.setItem(r, c, item)

    def peers(self) -> list[str]:
        return [self.item(r, 0).text() for r in range(self.rowCount())]
