"""Which peer carries which blocks of the current conversation, with latency and how it is reached
(direct, hole-punched, relayed via whom); reroute and error notices."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

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
        self.paths: dict[str, str] = {}

    @Slot(list)
    def show_route(self, hops: list[RouteHop]) -> None:
        self.hops = list(hops)
        self.table.setRowCount(len(hops))
        for row, hop in enumerate(hops):
            peer = QTableWidgetItem(_short(hop.peer_id))
            peer.setToolTip(hop.peer_id)
            self.table.setItem(row, 0, peer)
            self.table.setItem(row, 1, QTableWidgetItem(f"{hop.start}–{hop.end - 1}"))
            latency = f"{hop.server.rtt_ms:.1f} ms" if hop.server.rtt_ms else "–"
            self.table.setItem(row, 2, QTableWidgetItem(latency))
        self._show_paths()

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


def _short(peer: str) -> str:
    return peer if len(peer) <= 16 else f"…{peer[-8:]}"
