"""Settings: the swarm to join, what to serve when contributing, and the port.

An invalid value keeps the dialog open with the reason shown; nothing is replaced silently.
"""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from corolla.app.errors import SettingsError
from corolla.app.settings import Settings
from corolla.core.errors import CorollaError


def _model_info(model: str):
    """The model's description if it can be found here (a local folder, 'default', or a cached hub id)."""
    from corolla.core.model import ModelInfo, resolve_model

    if not model:
        raise CorollaError("name a model: \"default\", a folder or a hub id")
    return ModelInfo.load(resolve_model(model, progress=False))


class SettingsDialog(QDialog):
    accepted_settings = Signal(object)  # Settings, already validated

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Corolla settings")
        self._base = settings
        self.peers = QPlainTextEdit(self)
        self.peers.setPlaceholderText("one multiaddress per line, e.g. /ip4/203.0.113.5/tcp/31337/p2p/12D3Koo…")
        self.peers.setFixedHeight(70)
        self.model = QLineEdit(self)
        self.device = QComboBox(self)
        self.device.setEditable(True)
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.blocks = QLineEdit(self)
        self.blocks.setPlaceholderText("e.g. 0:10 (empty: use the number of blocks)")
        self.num_blocks = QSpinBox(self)
        self.num_blocks.setRange(1, 1000)
        self.port = QLineEdit(self)
        self.port.setPlaceholderText("0 = any free port")
        self.max_gpu_memory = QDoubleSpinBox(self)
        self.max_gpu_memory.setRange(0, 4096)
        self.max_gpu_memory.setDecimals(1)
        self.max_gpu_memory.setSingleStep(0.5)
        self.max_gpu_memory.setSuffix(" GiB")
        self.max_gpu_memory.setSpecialValueText("no cap")
        self.max_gpu_memory.setToolTip("Serve as many blocks as fit in this much GPU memory (or RAM on a "
                                       "CPU), their cache included; it replaces the number of blocks")
        self.cpu_threads = QSpinBox(self)
        self.cpu_threads.setRange(0, 1024)
        self.cpu_threads.setSpecialValueText("automatic")
        self.cpu_threads.setToolTip("CPU threads a server on the CPU computes with; the rest stay free for you")
        self.start_at_login = QCheckBox("Start Corolla when I log in", self)
        self.nickname = QLineEdit(self)
        self.nickname.setPlaceholderText("how others see your server, e.g. alice-3090 (optional)")
        self.error = QLabel(self)
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color:#9b1c1c")
        self.error.hide()
        form = QFormLayout()
        form.addRow("Initial peers", self.peers)
        form.addRow("Model", self.model)
        form.addRow("Device", self.device)
        form.addRow("Blocks", self.blocks)
        form.addRow("Number of blocks", self.num_blocks)
        form.addRow("Port", self.port)
        form.addRow("Memory cap", self.max_gpu_memory)
        form.addRow("CPU threads", self.cpu_threads)
        form.addRow("", self.start_at_login)
        form.addRow("Server nickname", self.nickname)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.try_accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.show_settings(settings)

    def show_settings(self, s: Settings) -> None:
        self._base = s
        self.peers.setPlainText("\n".join(s.initial_peers))
        self.model.setText(s.model)
        self.device.setCurrentText(s.device)
        self.blocks.setText(s.blocks)
        self.num_blocks.setValue(s.num_blocks)
        self.port.setText(str(s.port))
        self.max_gpu_memory.setValue(s.max_gpu_memory)
        self.cpu_threads.setValue(s.cpu_threads)
        self.start_at_login.setChecked(s.start_at_login)
        self.nickname.setText(s.nickname)

    def problems(self) -> dict[QWidget, str]:
        """Every field that cannot be used, with the reason in a sentence (empty: all good)."""
        found: dict[QWidget, str] = {}
        checks = [
            (self.peers, lambda: self._base.replace(initial_peers=self._peers())),
            (self.device, lambda: self._base.replace(device=self.device.currentText().strip())),
            (self.blocks, lambda: self._base.replace(blocks=self.blocks.text().strip())),
            (self.port, lambda: self._base.replace(port=self._port())),
            (self.max_gpu_memory, lambda: self._base.replace(blocks=self.blocks.text().strip(),
                                                             max_gpu_memory=self.max_gpu_memory.value())),
            (self.nickname, lambda: self._base.replace(nickname=self.nickname.text().strip())),
        ]
        for widget, check in checks:
            if widget is self.max_gpu_memory and self.blocks in found:
                continue  # the blocks are wrong already; say that first
            try:
                check()
            except SettingsError as exc:
                found[widget] = str(exc)
        model = self.model.text().strip()
        try:
            info = _model_info(model)
        except CorollaError as exc:
            found[self.model] = f"model {model!r} cannot be used: {exc}"
        else:
            blocks = self.blocks.text().strip()
            if self.blocks not in found and blocks and int(blocks.split(":")[1]) > info.num_blocks:
                found[self.blocks] = (f"blocks {blocks} go past the end of {info.name}, which has "
                                      f"{info.num_blocks} blocks (0:{info.num_blocks} serves them all)")
        return found

    def _peers(self) -> tuple[str, ...]:
        return tuple(line.strip() for line in self.peers.toPlainText().splitlines() if line.strip())

    def _port(self) -> int:
        text = self.port.text().strip()
        try:
            return int(text)
        except ValueError:
            raise SettingsError(f"port {text!r} must be a number from 0 (any) to 65535") from None

    def settings(self) -> Settings:
        """The settings as entered; raises SettingsError naming the first invalid value."""
        port_text = self.port.text().strip()
        try:
            port = int(port_text)
        except ValueError:
            raise SettingsError(f"port {port_text!r} must be a number from 0 (any) to 65535") from None
        peers = tuple(line.strip() for line in self.peers.toPlainText().splitlines() if line.strip())
        return self._base.replace(
            initial_peers=peers,
            model=self.model.text().strip(),
            device=self.device.currentText().strip(),
            blocks=self.blocks.text().strip(),
            num_blocks=self.num_blocks.value(),
            port=port,
            max_gpu_memory=self.max_gpu_memory.value(),
            cpu_threads=self.cpu_threads.value(),
            start_at_login=self.start_at_login.isChecked(),
            nickname=self.nickname.text().strip(),
        )

    @Slot()
    def try_accept(self) -> None:
        """Save only settings that work: every bad field is marked at once, with a sentence each."""
        problems = self.problems()
        for widget in (self.peers, self.model, self.device, self.blocks, self.port, self.max_gpu_memory,
                       self.nickname):
            widget.setStyleSheet("border: 1px solid #b00020" if widget in problems else "")
        if problems:
            self.error.setText("\n".join(f"• {why}" for why in problems.values()))
            self.error.show()
            return
        try:
            s = self.settings()
        except SettingsError as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        self.error.hide()
        self.accepted_settings.emit(s)
        self.accept()
