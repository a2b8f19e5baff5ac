"""The swarm's servers: peer, blocks, state, throughput, sessions, latency, how each is reached."""

from __future__ import annotations

from PySide6.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from corolla.p2p.records import ServerInfo

COLUMNS = ["Peer", "Blocks", "State", "Tokens/s", "Sessions", "Latency", "Reached"]


class ServerTable(QTableWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.setSortingEnabled(False)

    def show_servers(self, servers: list[ServerInfo], silent: list[str] = (),
                     paths: dict[str, str] | None = None) -> None:
        """The servers that answered, then the peers announced in the DHT that did not. `paths`: how
        each server is reached, by peer id ('direct', 'hole-punched', 'relayed via …')."""
        paths = paths or {}
        rows = [[s.peer_id, f"{s.start}–{s.end - 1}", s.state, f"{s.throughput:.1f}", str(s.active_sessions),
                 f"{s.rtt_ms:.1f} ms", paths.get(s.peer_id, "–")]
                for s in sorted(servers, key=lambda s: (s.start, s.end, s.peer_id))]
        rows += [[peer, "?", "not answering", "–", "–", "–", "–"] for peer in silent]
        self.setRowCount(len(rows))
        for r, cells in enumerate(rows):
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == 0:
                    item.setToolTip(text)
                self.setItem(r, c, item)

    def peers(self) -> list[str]:
        return [self.item(r, 0).text() for r in range(self.rowCount())]
