import subprocess
import sys
import textwrap

import pytest

from corolla.app.chat.history import ConversationStore
from corolla.app.errors import HistoryError
from corolla.app.paths import data_dir


def test_conversations_new_rename_delete_and_order(corolla_dirs):
    store = ConversationStore()
    assert store.path.parent == data_dir() == corolla_dirs / "data"
    a = store.create("first", system_prompt="be brief")
    b = store.create("second")
    store.add_message(a.id, "user", "hello")  # a changed last: listed first
    assert [c.title for c in store.conversations()] == ["first", "second"]
    store.rename(b.id, "  renamed ")
    assert store.conversation(b.id).title == "renamed"
    with pytest.raises(HistoryError, match="empty"):
        store.rename(b.id, "  ")
    store.delete(a.id)
    assert [c.id for c in store.conversations()] == [b.id]
    assert store.messages(a.id) == []  # messages go with their conversation
    with pytest.raises(HistoryError, match="does not exist"):
        store.conversation(a.id)
    with pytest.raises(HistoryError, match="role"):
        store.add_message(b.id, "robot", "beep")


def test_everything_survives_reopening(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = ConversationStore(path)
    c = store.create("chat", system_prompt="sys")
    store.add_message(c.id, "user", "What is 2+2?")
    reply = store.add_message(c.id, "assistant", "", state="streaming")
    store.append(reply.id, "It is ")
    store.append(reply.id, "4.")
    store.finish(reply.id, "complete")
    store.save_draft(c.id, "and 3+3")
    store.close()
    again = ConversationStore(path)
    assert [(m.role, m.content, m.state) for m in again.messages(c.id)] == [
        ("user", "What is 2+2?", "complete"), ("assistant", "It is 4.", "complete")]
    assert again.conversation(c.id).draft == "and 3+3"
    assert again.conversation(c.id).system_prompt == "sys"


def test_a_killed_process_loses_nothing_it_stored(tmp_path):
    """A real crash: the writer is killed mid-reply; every batch it stored is there afterwards."""
    path = tmp_path / "h.sqlite3"
    writer = textwrap.dedent(f"""
        import sys, time
        from corolla.app.chat.history import ConversationStore
        s = ConversationStore({str(path)!r})
        c = s.create("crash")
        s.add_message(c.id, "user", "count")
        r = s.add_message(c.id, "assistant", "", state="streaming")
        for i in range(5):
            s.append(r.id, f"{{i}} ")
        print("written", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True,
                            cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    try:
        assert proc.stdout.readline().strip() == "written"
    finally:
        proc.kill()
        proc.wait(10)
    store = ConversationStore(path)
    (c,) = store.conversations()
    user, reply = store.messages(c.id)
    assert user.content == "count"
    assert reply.content == "0 1 2 3 4 "
    assert reply.state == "interrupted"  # it was still streaming when the writer died
