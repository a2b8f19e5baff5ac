"""Which peer carries which blocks of the current conversation, with latency and how it is reached
(direct, hole-punched, relayed via whom); reroute and error notices."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from corolla.app.swarm.snapshot import SwarmSnapshot
from corolla.p2p.names import block_span
from corolla.p2p.routing import RouteHop


class RoutePanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, 4, self)
        self.table.setHorizontalHeaderLabels(["Peer", "Blocks", "Latency", "Reached"])
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.notice = QLabel(self)
        self.notice.setWordWrap(True)
        self.notice.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Route</b>", self))
        layout.addWidget(self.table)
        layout.addWidget(self.notice)
        self.hops: list[RouteHop] = []
        self._listed: set[str] = set()  # peers seen answering in a snapshot of the swarm
        self.paths: dict[str, str] = {}

    @Slot(list)
    def show_route(self, hops: list[RouteHop]) -> None:
        self.hops = list(hops)
        self._show(set())

    @Slot(object)
    def show_snapshot(self, snapshot: SwarmSnapshot) -> None:
        """Grey the hops whose server just left the swarm; drop those gone for longer than the grace."""
        if snapshot.error or not snapshot.num_blocks:
            return  # no fresh answer: keep what is shown
        live = {s.peer_id for s in snapshot.servers}
        left = {s.peer_id for s in snapshot.left}
        self._listed |= live
        # a hop the swarm view never listed (a lookup can miss a server) stays: only what left goes
        self.hops = [h for h in self.hops if h.peer_id in live | left or h.peer_id not in self._listed]
        self._show(left)

    def _show(self, left: set[str]) -> None:
        self.table.setRowCount(len(self.hops))
        for row, hop in enumerate(self.hops):
            gone = hop.peer_id in left
            peer = QTableWidgetItem(hop.server.name)
            peer.setToolTip(hop.peer_id)
            latency = "left" if gone else f"{hop.server.rtt_ms:.1f} ms" if hop.server.rtt_ms else "–"
            cells = [peer, QTableWidgetItem(block_span(hop.start, hop.end)), QTableWidgetItem(latency)]
            for col, item in enumerate(cells):
                if gone:
                    item.setForeground(QColor("#888888"))
                self.table.setItem(row, col, item)
        self._show_paths()

    def peers(self) -> list[str]:
        """The full peer ids of the hops shown."""
        return [h.peer_id for h in self.hops]

    @Slot(dict)
    def show_paths(self, paths: dict[str, str]) -> None:
        """How each server is reached, by peer id: 'direct', 'hole-punched', 'relayed via <relay>'."""
        self.paths = dict(paths)
        self._show_paths()

    def _show_paths(self) -> None:
        for row, hop in enumerate(self.hops):
            path = self.paths.get(hop.peer_id, "–")
            item = QTableWidgetItem(path)
            if path.startswith("relayed"):
                item.setToolTip("no direct connection could be made (a router in the way): "
                                "hidden states go through another peer, a little slower")
            self.table.setItem(row, 3, item)

    @Slot(str, str)
    def show_reroute(self, text: str, details: str = "") -> None:
        self._notice(f"⟳ {text}", "#fff4d6", "#8a5a00")
        self.notice.setToolTip(details)

    @Slot(str)
    def show_error(self, text: str) -> None:
        self._notice(text, "#fde2e2", "#9b1c1c")

    @Slot()
    def clear_notice(self) -> None:
        self.notice.hide()
        self.notice.clear()

    def _notice(self, text: str, background: str, color: str) -> None:
        self.notice.setText(text)
        self.notice.setStyleSheet(f"background:{background}; color:{color}; padding:4px; border-radius:3px")
        self.notice.show()

