"""One bar per block of the model, as tall as the number of servers holding it; red where none does."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt, Slot
from PySide6.QtGui import QColor, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget


class BlockCoverage(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.counts: list[int] = []
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(480, 110)

    @Slot(list)
    def show_coverage(self, counts: list[int]) -> None:
        self.counts = list(counts)
        missing = [i for i, n in enumerate(counts) if n == 0]
        self.setToolTip(f"blocks with no server: {missing}" if missing else "every block is served")
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#fafafa"))
        label_h = 16
        if not self.counts:
            p.setPen(QColor("#888888"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no swarm information yet")
            return
        n = len(self.counts)
        top = max(self.counts) or 1
        width = self.width() / n
        area = self.height() - label_h - 4
        for i, count in enumerate(self.counts):
            h = area * (count / top) if count else area
            color = QColor("#3aa55d") if count else QColor("#f3c6c6")
            rect = QRectF(i * width + 1, 2 + area - h, max(1.0, width - 2), h)
            p.fillRect(rect, color)
            if count:
                p.setPen(QColor("#ffffff"))
                p.drawText(rect, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, str(count))
        p.setPen(QColor("#555555"))
        step = max(1, n // 10)
        for i in range(0, n, step):
            p.drawText(QRectF(i * width, area + 4, width * step, label_h), Qt.AlignmentFlag.AlignLeft, str(i))
