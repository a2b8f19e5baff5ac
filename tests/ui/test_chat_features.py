"""The chat's features on real widgets: Enter sends, markdown and code blocks, copy, edit and resend,
search, export, speed under each reply, and nothing shown is lost when the app is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest

from corolla.app.chat.history import ConversationStore, Message
from corolla.app.settings import Settings
from corolla.core.generation import CHAT_SAMPLING
from corolla.ui.bridge.services import Services
from corolla.ui.composer import Composer
from corolla.ui.message_view import MessageView
from corolla.ui.tray_app import TrayApp


@pytest.fixture
def chat_app(qtbot):
    settings = Settings(sampling=CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=4))
    services = Services(settings, persist=False, local_spans=[(0, 30)])
    app = TrayApp(services)
    qtbot.addWidget(app.tray.window)
    yield services, app
    app.quit()


def test_enter_sends_and_shift_enter_breaks_the_line(qtbot):
    composer = Composer()
    qtbot.addWidget(composer)
    sent = []
    composer.send_requested.connect(sent.append)
    QTest.keyClicks(composer.editor, "first line")
    QTest.keyClick(composer.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    QTest.keyClicks(composer.editor, "second line")
    assert sent == [] and composer.editor.toPlainText() == "first line\nsecond line"
    QTest.keyClick(composer.editor, Qt.Key.Key_Return)
    assert sent == ["first line\nsecond line"] and composer.editor.toPlainText() == ""


def test_markdown_renders_code_blocks_with_copy_links(qtbot):
    view = MessageView()
    qtbot.addWidget(view)
    code = "def greet():\n    return 'hi'\n"
    view.show_messages([Message(1, 1, "user", "Write *one* function.", "complete"),
                        Message(2, 1, "assistant", f"Here it is:\n\n```python\n{code}```\n\nDone.", "complete")])
    html = view.toHtml()
    assert "<pre" in html and "greet" in html  # a code block, not the fence characters
    assert "```" not in view.toPlainText() and "*one*" not in view.toPlainText()  # emphasis rendered
    view.anchorClicked.emit(QUrl("code:1:0"))
    assert QGuiApplication.clipboard().text() == code
    view.anchorClicked.emit(QUrl("copy:0"))
    assert QGuiApplication.clipboard().text() == "Write *one* function."
    edits = []
    view.edit_requested.connect(lambda mid, text: edits.append((mid, text)))
    view.anchorClicked.emit(QUrl("edit:0"))
    assert edits == [(1, "Write *one* function.")]


@pytest.mark.slow
def test_edit_and_resend_replaces_the_rest_of_the_conversation(qtbot, chat_app):
    services, app = chat_app
    chat = app.open_chat()
    with qtbot.waitSignal(services.conversations.reply_finished, timeout=120_000):
        services.conversations.send("What is the capital of France?")
    first = services.store.messages(services.conversations.current)
    assert [m.role for m in first] == ["user", "assistant"]
    qtbot.waitUntil(lambda: "tokens/s" in chat.messages.toPlainText(), timeout=10_000)  # speed under the reply
    assert "first token after" in chat.messages.toPlainText()

    chat.messages.anchorClicked.emit(QUrl("edit:0"))  # the user's message
    assert chat.composer.editing == first[0].id
    assert chat.composer.editor.toPlainText() == "What is the capital of France?"
    chat.composer.editor.setPlainText("What is the capital of Italy?")
    with qtbot.waitSignal(services.conversations.reply_finished, timeout=120_000) as finished:
        QTest.keyClick(chat.composer.editor, Qt.Key.Key_Return)
    assert finished.args == ["complete"]
    after = services.store.messages(services.conversations.current)
    assert [m.role for m in after] == ["user", "assistant"]
    assert after[0].content == "What is the capital of Italy?"
    assert "France" not in chat.messages.toPlainText()


def test_search_finds_conversations_and_export_files_parse(qtbot, chat_app, tmp_path):
    services, app = chat_app
    store = services.store
    trip = store.create("Trip")
    store.add_message(trip.id, "user", "Which trains go to Lyon?")
    store.add_message(trip.id, "assistant", "The TGV from Paris, about two hours.")
    cake = store.create("Cake")
    store.add_message(cake.id, "user", "A recipe for 100% chocolate cake")
    chat = app.open_chat()
    chat.conversations.show_conversations(store.conversations(), None)
    chat.search.setText("tgv")
    assert chat.conversations.titles() == ["Trip"]
    chat.search.setText("100%")
    assert chat.conversations.titles() == ["Cake"]
    chat.search.setText("")
    assert set(chat.conversations.titles()) >= {"Trip", "Cake"}

    services.conversations.open(trip.id)
    data = json.loads(chat.export_to(tmp_path / "trip.json", "json").read_text())
    assert data["title"] == "Trip"
    assert [(m["role"], m["content"]) for m in data["messages"] if m["role"] != "system"] == [
        ("user", "Which trains go to Lyon?"), ("assistant", "The TGV from Paris, about two hours.")]
    markdown = chat.export_to(tmp_path / "trip.md", "markdown").read_text()
    assert markdown.startswith("# Trip") and "**You**" in markdown and "The TGV from Paris" in markdown


KILLED_APP = """
import sys
from PySide6.QtWidgets import QApplication
from corolla.app.settings import Settings
from corolla.core.generation import CHAT_SAMPLING
from corolla.ui.bridge.services import Services
from corolla.ui.tray_app import TrayApp
qt = QApplication([])
services = Services(Settings(sampling=CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=400)),
                    persist=False, local_spans=[(0, 30)])
app = TrayApp(services)
chat = app.open_chat()
shown = []
def on_text(text):  # connected after the window's own slot: the view already has it
    shown.append(text)
    print("SHOWN " + repr("".join(shown)), flush=True)
services.conversations.reply_text.connect(on_text)
services.conversations.send("Tell me a long story about a dragon who learns to sing.")
qt.exec()
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_app_loses_no_character_that_was_shown(tmp_path):
    import ast

    env = {**os.environ, "COROLLA_DATA_DIR": str(tmp_path / "data"), "COROLLA_CONFIG_DIR": str(tmp_path / "config"),
           "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_APP], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    shown = ""
    try:
        for line in proc.stdout:
            if line.startswith("SHOWN "):
                shown = ast.literal_eval(line[6:])
                if len(shown) >= 60:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert len(shown) >= 60, "the reply did not stream"
    store = ConversationStore(Path(tmp_path / "data" / "history.sqlite3"))
    (conversation,) = store.conversations()
    reply = [m for m in store.messages(conversation.id) if m.role == "assistant"][0]
    assert reply.state == "interrupted"
    assert reply.content.startswith(shown)


def test_dark_and_light_themes(qapp):
    from corolla.ui.theme import apply_theme

    assert apply_theme(qapp, "dark") == "dark"
    assert qapp.palette().color(qapp.palette().ColorRole.Window).lightness() < 60
    assert apply_theme(qapp, "light") == "light"
    assert qapp.palette().color(qapp.palette().ColorRole.Window).lightness() > 180
