"""The sampling knobs: every one the command line has (temperature 0 is greedy; seed; stop strings)."""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QWidget

from corolla.core.generation import CHAT_SAMPLING, SamplingParams


class SamplingPanel(QWidget):
    changed = Signal(object)  # SamplingParams

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.temperature = _double(0.0, 5.0, 0.05, 2, self)
        self.top_p = _double(0.01, 1.0, 0.05, 2, self)
        self.top_k = QSpinBox(self)
        self.top_k.setRange(0, 1000)
        self.top_k.setSpecialValueText("off")
        self.max_new_tokens = QSpinBox(self)
        self.max_new_tokens.setRange(1, 8192)
        self.repetition_penalty = _double(1.0, 3.0, 0.05, 2, self)
        self.seed = QSpinBox(self)
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setSpecialValueText("random")
        self.stop = QLineEdit(self)
        self.stop.setPlaceholderText("stop strings, separated by |")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Top-k", self.top_k)
        form.addRow("Max new tokens", self.max_new_tokens)
        form.addRow("Repetition penalty", self.repetition_penalty)
        form.addRow("Seed", self.seed)
        form.addRow("Stop at", self.stop)
        self.show_sampling(CHAT_SAMPLING)
        for box in (self.temperature, self.top_p, self.repetition_penalty):
            box.valueChanged.connect(self._emit)
        for ibox in (self.top_k, self.max_new_tokens, self.seed):
            ibox.valueChanged.connect(self._emit)
        self.stop.editingFinished.connect(self._emit)

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=round(self.temperature.value(), 4),
            top_p=round(self.top_p.value(), 4),
            top_k=self.top_k.value(),
            max_new_tokens=self.max_new_tokens.value(),
            repetition_penalty=round(self.repetition_penalty.value(), 4),
            seed=None if self.seed.value() < 0 else self.seed.value(),
            stop=tuple(s for s in self.stop.text().split("|") if s),
        ).validated()

    @Slot(object)
    def show_sampling(self, s: SamplingParams) -> None:
        boxes = (self.temperature, self.top_p, self.top_k, self.max_new_tokens, self.repetition_penalty, self.seed,
                 self.stop)
        for b in boxes:
            b.blockSignals(True)
        self.temperature.setValue(s.temperature)
        self.top_p.setValue(s.top_p)
        self.top_k.setValue(s.top_k)
        self.max_new_tokens.setValue(s.max_new_tokens)
        self.repetition_penalty.setValue(s.repetition_penalty)
        self.seed.setValue(-1 if s.seed is None else s.seed)
        self.stop.setText("|".join(s.stop))
        for b in boxes:
            b.blockSignals(False)

    @Slot()
    def _emit(self) -> None:
        self.changed.emit(self.sampling())


def _double(low: float, high: float, step: float, decimals: int, parent: QWidget) -> QDoubleSpinBox:
    box = QDoubleSpinBox(parent)
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setDecimals(decimals)
    return box
