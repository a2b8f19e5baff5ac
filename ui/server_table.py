"""The swarm's servers: peer, blocks, state, throughput, sessions, latency."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from corolla.p2p.records import ServerInfo

COLUMNS = ["Peer", "Blocks", "State", "Tokens/s", "Sessions", "Latency"]
OWN_MARK = " (this PC)"


class ServerTable(QTableWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.setSortingEnabled(False)

    def show_servers(self, servers: list[ServerInfo], silent: list[str] = (), own: str = "") -> None:
        """The servers that answered, then the peers announced in the DHT that did not; `own` (a peer
        id) is this PC's server, marked in bold."""
        rows = [[s.peer_id, f"{s.start}–{s.end - 1}", s.state, f"{s.throughput:.1f}", str(s.active_sessions),
                 f"{s.rtt_ms:.1f} ms"] for s in sorted(servers, key=lambda s: (s.start, s.end, s.peer_id))]
        rows += [[peer, "?", "not answering", "–", "–", "–"] for peer in silent]
        self.setRowCount(len(rows))
        for r, cells in enumerate(rows):
            mine = bool(own) and cells[0] == own
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text + OWN_MARK if mine and c == 0 else text)
                if c == 0:
                    item.setData(Qt.ItemDataRole.UserRole, text)
                    item.setToolTip(text + (" — this PC's server" if mine else ""))
                if mine:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                    item.setBackground(QBrush(QColor(58, 165, 93, 50)))
                self.setItem(r, c, item)

    def peers(self) -> list[str]:
        return [self.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in range(self.rowCount())]

    def own_rows(self) -> list[int]:
        """The rows marked as this PC's server."""
        return [r for r in range(self.rowCount()) if self.item(r, 0).text().endswith(OWN_MARK)]
