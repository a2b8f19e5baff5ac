"""The first-run welcome: which swarm to join, or start one on this PC; what contributing lends and
what servers can see. Contributing stays off until the user chooses it here or in the menu."""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from corolla.app.errors import SettingsError
from corolla.app.settings import check_multiaddr

WHAT_IS_LENT = (
    "Contributing lends this computer's GPU (or its CPU), memory and network to run a part of a model "
    "for others, only while you have it on. Servers see the hidden states of the conversations they "
    "serve, never the text — but the first server on a route could recover your words from what it "
    "receives, so for private conversations use a private swarm or a first server you trust."
)


class WelcomeDialog(QDialog):
    join_public = Signal()
    join_private = Signal(str)  # a multiaddress, already checked
    start_here = Signal()  # a new swarm on this PC serving the whole model
    later = Signal()

    def __init__(self, public_peers: tuple[str, ...], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Welcome to Corolla")
        title = QLabel("Welcome to Corolla", self)
        title.setObjectName("welcomeTitle")
        intro = QLabel("Chat with large language models that run across volunteers' computers. "
                       "Where should this computer connect?", self)
        intro.setWordWrap(True)
        self.public_button = QPushButton("Join the &public swarm", self)
        self.public_button.setEnabled(bool(public_peers))
        self.public_button.setToolTip("" if public_peers else "This build lists no public swarm yet.")
        self.public_button.clicked.connect(self._public)
        self.address = QLineEdit(self)
        self.address.setPlaceholderText("/ip4/203.0.113.5/tcp/31337/p2p/12D3Koo…")
        self.private_button = QPushButton("Join this swarm", self)
        self.private_button.clicked.connect(self._private)
        self.start_button = QPushButton("&Start a swarm on this PC (serves the whole model)", self)
        self.start_button.clicked.connect(self._start)
        self.later_button = QPushButton("&Not now", self)
        self.later_button.clicked.connect(self._later)
        self.error = QLabel(self)
        self.error.setStyleSheet("color: #b00020")
        self.error.setWordWrap(True)
        self.error.hide()
        note = QLabel(WHAT_IS_LENT, self)
        note.setObjectName("privacyNote")
        note.setWordWrap(True)
        private_row = QHBoxLayout()
        private_row.addWidget(self.address, 1)
        private_row.addWidget(self.private_button)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addWidget(self.public_button)
        layout.addWidget(QLabel("A private swarm, by the address its owner gave you:", self))
        layout.addLayout(private_row)
        layout.addWidget(self.error)
        layout.addWidget(self.start_button)
        layout.addWidget(note)
        layout.addWidget(self.later_button)
        # Wrapped labels need their height for this width: resize(560, 0) cut the last lines off.
        self.setMinimumWidth(560)
        self.resize(560, max(self.heightForWidth(560), self.sizeHint().height()))

    @Slot()
    def _public(self) -> None:
        self.join_public.emit()
        self.accept()

    @Slot()
    def _private(self) -> None:
        text = self.address.text().strip()
        try:
            check_multiaddr(text)
        except SettingsError as exc:
            self.error.setText(str(exc))
            self.error.show()
            self.address.setStyleSheet("border: 1px solid #b00020")
            return
        self.join_private.emit(text)
        self.accept()

    @Slot()
    def _start(self) -> None:
        self.start_here.emit()
        self.accept()

    @Slot()
    def _later(self) -> None:
        self.later.emit()
        self.accept()
