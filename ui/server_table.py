"""The swarm's servers: name, blocks, state, throughput, sessions, latency, how each is reached and
its links to the servers of the next blocks, and its precision (dtype, and how its weights are
quantized); this PC's server marked in bold, those that just left greyed."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from corolla.p2p.names import block_span, peer_name
from corolla.p2p.records import ServerInfo

COLUMNS = ["Server", "Blocks", "State", "Tokens/s", "Sessions", "Latency", "Reached", "Next servers", "Precision"]
LINKS_SHOWN = 2  # links in the cell; the tooltip lists them all
LINKS = COLUMNS.index("Next servers")
PEER_ID = Qt.ItemDataRole.UserRole  # the full peer id behind the short name
OWN_MARK = " (this PC)"


class ServerTable(QTableWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.setSortingEnabled(False)

    def show_servers(self, servers: list[ServerInfo], left: list[ServerInfo] = (), own: str = "",
                     paths: dict[str, str] | None = None) -> None:
        """The servers that answered, then those that stopped answering a moment ago (greyed); `own` (a
        peer id) is this PC's server, marked in bold; `paths`: how each server is reached, by peer id
        ('direct', 'hole-punched', 'relayed via …')."""
        paths = paths or {}
        names = {s.peer_id: s.name for s in servers}
        links = {s.peer_id: [f"{names.get(pid) or peer_name(pid)}: {rtt:.0f} ms"
                             + ("" if mbps is None else f", {mbps:.0f} Mbit/s") for pid, rtt, mbps in s.links()]
                 for s in servers}
        rows = [(s, [s.name, block_span(s.start, s.end), s.state, f"{s.throughput:.1f}", str(s.active_sessions),
                     f"{s.rtt_ms:.1f} ms", paths.get(s.peer_id, "–"), _first_links(links[s.peer_id]),
                     s.precision_text])
                for s in sorted(servers, key=lambda s: (s.start, s.end, s.peer_id))]
        rows += [(s, [s.name, block_span(s.start, s.end), "left", "–", "–", "–", "–", "–", "–"]) for s in left]
        self.setRowCount(len(rows))
        grey = QColor("#888888")
        for r, (server, cells) in enumerate(rows):
            mine = bool(own) and server.peer_id == own
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text + OWN_MARK if mine and c == 0 else text)
                if c == 0:
                    item.setToolTip(server.peer_id + (" — this PC's server" if mine else ""))
                    item.setData(PEER_ID, server.peer_id)
                if c == LINKS and links.get(server.peer_id):
                    item.setToolTip("measured by this server to the servers of the next blocks:\n"
                                    + "\n".join(links[server.peer_id]))
                if cells[2] == "left":
                    item.setForeground(grey)
                    item.setToolTip("stopped answering; it disappears from this list shortly")
                if mine:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                    item.setBackground(QBrush(QColor(58, 165, 93, 50)))
                self.setItem(r, c, item)

    def peers(self) -> list[str]:
        """The full peer ids, row by row."""
        return [self.item(r, 0).data(PEER_ID) for r in range(self.rowCount())]

    def state_of(self, peer_id: str) -> str | None:
        """The State cell of `peer_id`'s row, or None when it is not listed."""
        for r in range(self.rowCount()):
            if self.item(r, 0).data(PEER_ID) == peer_id:
                return self.item(r, 2).text()
        return None

    def own_rows(self) -> list[int]:
        """The rows marked as this PC's server."""
        return [r for r in range(self.rowCount()) if self.item(r, 0).text().endswith(OWN_MARK)]


def _first_links(links: list[str]) -> str:
    """The nearest LINKS_SHOWN links, '…' when there are more, '–' when none was measured."""
    if not links:
        return "–"
    return "; ".join(links[:LINKS_SHOWN]) + (" …" if len(links) > LINKS_SHOWN else "")
