"""The chat window on real widgets, a real SQLite file and (for replies) the real default model
run in-process as a chain of spans; tests/ui/test_app_swarm.py does the same through a swarm."""

import pytest

from corolla.app.settings import Settings
from corolla.core.generation import CHAT_SAMPLING
from corolla.ui.bridge.services import Services
from corolla.ui.tray_app import TrayApp


def make_app(qtbot, max_new_tokens=4):
    settings = Settings(sampling=CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=max_new_tokens))
    services = Services(settings, persist=False, local_spans=[(0, 15), (15, 30)])
    app = TrayApp(services)
    qtbot.addWidget(app.tray.window)
    return services, app


@pytest.fixture
def chat_app(qtbot):
    services, app = make_app(qtbot)
    yield services, app
    app.quit()


def test_conversations_new_rename_delete_and_survive_reopening(qtbot, chat_app):
    _, app = chat_app
    chat = app.open_chat()
    assert chat.conversations.titles() == ["New conversation"]
    chat.conversations.new_button.click()
    chat.conversations.rename_current("Travel plans")
    chat.composer.editor.setPlainText("half-typed question")
    chat.system_prompt.editor.setPlainText("Answer in French.")
    assert chat.conversations.titles() == ["Travel plans", "New conversation"]
    chat.conversations.new_button.click()
    chat.conversations.delete_button.click()  # asks first
    assert chat.conversations.delete_button.text() == "Delete?"
    assert len(chat.conversations.titles()) == 3
    chat.conversations.delete_button.click()  # deletes the one just made
    assert chat.conversations.titles() == ["Travel plans", "New conversation"]
    assert chat.conversations.delete_button.text() == "Delete"
    chat.close()  # the draft is saved on close, not only after the typing pause

    chat = app.open_chat()
    assert chat.conversations.titles() == ["Travel plans", "New conversation"]
    chat.conversations.list.setCurrentRow(0)
    assert chat.composer.editor.toPlainText() == "half-typed question"
    assert chat.system_prompt.text() == "Answer in French."
    app.quit()

    _, app = make_app(qtbot)  # the app restarted on the same data dir
    chat = app.open_chat()
    assert chat.conversations.titles() == ["Travel plans", "New conversation"]
    assert chat.composer.editor.toPlainText() == "half-typed question"
    app.quit()


@pytest.mark.slow
def test_reply_streams_token_by_token_and_stop_stops_it(qtbot, chat_app):
    services, app = chat_app
    services.conversations.set_sampling(CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=300))
    chat = app.open_chat()
    pieces = []
    services.backend.token.connect(lambda rid, text: pieces.append(text))
    chat.composer.editor.setPlainText("Tell me a long story about a dragon.")
    with qtbot.waitSignal(services.backend.route_changed, timeout=60000) as route:
        chat.composer.send_button.click()
    assert [(h.start, h.end) for h in route.args[0]] == [(0, 15), (15, 30)]
    assert chat.composer.stop_button.isEnabled() and not chat.composer.send_button.isEnabled()
    qtbot.waitUntil(lambda: len(pieces) >= 3, timeout=60000)
    qtbot.waitUntil(lambda: "".join(pieces) in chat.messages.entries[-1].text, timeout=5000)
    with qtbot.waitSignal(services.conversations.reply_finished, timeout=30000) as finished:
        chat.composer.stop_button.click()
    assert finished.args == ["stopped"]
    assert chat.composer.send_button.isEnabled()
    assert "[stopped]" in chat.messages.toPlainText()
    (reply,) = [m for m in services.store.messages(services.conversations.current) if m.role == "assistant"]
    assert reply.state == "stopped" and reply.content == "".join(pieces)  # all that was shown is stored
    assert 0 < len(pieces) < 300
    assert chat.context.used > 0 and chat.context.limit == 8192
    assert chat.conversations.titles() == ["Tell me a long story about a dragon."]

    with qtbot.waitSignal(services.conversations.reply_finished, timeout=60000) as finished:
        services.conversations.set_sampling(CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=3))
        chat.composer.regenerate_button.click()
    assert finished.args == ["complete"]
    replies = [m for m in services.store.messages(services.conversations.current) if m.role == "assistant"]
    assert len(replies) == 1 and replies[0].state == "complete" and replies[0].content
    assert replies[0].content == chat.messages.entries[-1].text
    assert "[stopped]" not in chat.messages.toPlainText()


@pytest.mark.slow
def test_opening_another_conversation_stops_the_reply_where_it_belongs(qtbot, chat_app):
    services, app = chat_app
    services.conversations.set_sampling(CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=300))
    chat = app.open_chat()
    first = services.conversations.current
    pieces = []
    services.backend.token.connect(lambda rid, text: pieces.append(text))
    chat.composer.editor.setPlainText("Tell me a long story about a dragon.")
    chat.composer.send_button.click()
    qtbot.waitUntil(lambda: len(pieces) >= 2, timeout=60000)
    chat.conversations.new_button.click()  # while the reply streams
    assert services.conversations.current != first
    assert chat.messages.toPlainText() == ""  # nothing of the old reply leaks into the new view
    (reply,) = [m for m in services.store.messages(first) if m.role == "assistant"]
    assert reply.state == "stopped" and reply.content.startswith("".join(pieces[:2]))
    services.conversations.set_sampling(CHAT_SAMPLING.replace(temperature=0.0, max_new_tokens=3))
    chat.composer.editor.setPlainText("Hi!")
    with qtbot.waitSignal(services.conversations.reply_finished, timeout=60000) as finished:
        chat.composer.send_button.click()  # at once: the stopped reply does not block the next
    assert finished.args == ["complete"]
    assert "[stopped]" not in chat.messages.toPlainText()


def test_the_context_meter_counts_an_opened_conversation(qtbot, chat_app):
    services, app = chat_app
    cid = services.store.create("old", system_prompt="Be brief.").id
    services.store.add_message(cid, "user", "What is the capital of France? " * 20)
    chat = app.open_chat()
    chat.conversations.show_conversations(services.store.conversations(), None)
    chat.conversations.list.setCurrentRow([c.id for c in services.store.conversations()].index(cid))
    qtbot.waitUntil(lambda: chat.context.used > 100, timeout=60000)
    assert chat.context.limit == 8192 and "tokens" in chat.context.format()
