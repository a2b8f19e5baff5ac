"""Conversation history: a SQLite file in the user data dir.

Every change is its own committed transaction in WAL mode, so a crash of the app loses nothing
already handed to the store. `synchronous=NORMAL` skips the fsync per commit (measured up to 40 ms
on a busy disk, which would stall the GUI while a reply streams); a power loss may then drop the
last commits, an app crash never does. A reply being generated is written in batches as it streams
(`append`); a reply still marked `streaming` when the store is opened was cut off by a crash and is
marked `interrupted`.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from corolla.app.errors import HistoryError
from corolla.app.paths import data_dir

HISTORY_FILE = "history.sqlite3"
ROLES = ("system", "user", "assistant")
# A message's state: complete, still streaming, stopped by the user, failed, or cut off by a crash.
STATES = ("complete", "streaming", "stopped", "failed", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    system_prompt TEXT NOT NULL DEFAULT '',
    draft TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'complete',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
"""


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    system_prompt: str
    draft: str
    updated: float


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    state: str


class ConversationStore:
    """All conversations and their messages. Use from one thread (the GUI thread)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else data_dir() / HISTORY_FILE
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute("UPDATE messages SET state='interrupted' WHERE state='streaming'")
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open the conversation history {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    # conversations
    def create(self, title: str = "New conversation", system_prompt: str = "") -> Conversation:
        now = time.time()
        cur = self._db.execute(
            "INSERT INTO conversations(title, system_prompt, created, updated) VALUES (?, ?, ?, ?)",
            (title, system_prompt, now, now),
        )
        return self.conversation(int(cur.lastrowid or 0))

    def conversation(self, conversation_id: int) -> Conversation:
        row = self._db.execute(
            "SELECT id, title, system_prompt, draft, updated FROM conversations WHERE id=?",
            (conversation_id,),
        ).fetchone()
        if row is None:
            raise HistoryError(f"conversation {conversation_id} does not exist (deleted?)")
        return Conversation(*row)

    def conversations(self) -> list[Conversation]:
        """All conversations, most recently changed first."""
        rows = self._db.execute(
            "SELECT id, title, system_prompt, draft, updated FROM conversations ORDER BY updated DESC, id DESC"
        ).fetchall()
        return [Conversation(*r) for r in rows]

    def rename(self, conversation_id: int, title: str) -> None:
        if not title.strip():
            raise HistoryError("a conversation's title cannot be empty")
        self._update(conversation_id, "title", title.strip())

    def set_system_prompt(self, conversation_id: int, text: str) -> None:
        self._update(conversation_id, "system_prompt", text)

    def save_draft(self, conversation_id: int, text: str) -> None:
        """Keep what is typed but not yet sent (does not reorder the list)."""
        self._db.execute("UPDATE conversations SET draft=? WHERE id=?", (text, conversation_id))

    def delete(self, conversation_id: int) -> None:
        self.conversation(conversation_id)
        self._db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))

    # messages
    def messages(self, conversation_id: int) -> list[Message]:
        rows = self._db.execute(
            "SELECT id, conversation_id, role, content, state FROM messages WHERE conversation_id=? ORDER BY id",
            (conversation_id,),
        ).fetchall()
        return [Message(*r) for r in rows]

    def message(self, message_id: int) -> Message:
        row = self._db.execute(
            "SELECT id, conversation_id, role, content, state FROM messages WHERE id=?", (message_id,)
        ).fetchone()
        if row is None:
            raise HistoryError(f"message {message_id} does not exist")
        return Message(*row)

    def add_message(self, conversation_id: int, role: str, content: str, state: str = "complete") -> Message:
        if role not in ROLES:
            raise HistoryError(f"role {role!r} must be one of {', '.join(ROLES)}")
        if state not in STATES:
            raise HistoryError(f"state {state!r} must be one of {', '.join(STATES)}")
        self.conversation(conversation_id)
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "INSERT INTO messages(conversation_id, role, content, state, created) VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, content, state, now),
            )
            self._db.execute("UPDATE conversations SET updated=? WHERE id=?", (now, conversation_id))
        return self.message(int(cur.lastrowid or 0))

    def append(self, message_id: int, text: str) -> None:
        """Add a batch of streamed text to a message, durably."""
        cur = self._db.execute("UPDATE messages SET content = content || ? WHERE id=?", (text, message_id))
        if cur.rowcount == 0:
            raise HistoryError(f"message {message_id} does not exist")

    def finish(self, message_id: int, state: str = "complete") -> None:
        if state not in STATES:
            raise HistoryError(f"state {state!r} must be one of {', '.join(STATES)}")
        self._db.execute("UPDATE messages SET state=? WHERE id=?", (state, message_id))

    def delete_message(self, message_id: int) -> None:
        self._db.execute("DELETE FROM messages WHERE id=?", (message_id,))

    def search(self, text: str) -> list[int]:
        """Ids of the conversations whose title or any message contains `text` (any case), most recent first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._db.execute(
            "SELECT c.id FROM conversations c WHERE c.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m "
            "WHERE m.conversation_id = c.id AND m.content LIKE ? ESCAPE '\\') ORDER BY c.updated DESC, c.id DESC",
            (pattern, pattern)).fetchall()
        return [int(r[0]) for r in rows]

    def _update(self, conversation_id: int, column: str, value: str) -> None:
        cur = self._db.execute(
            f"UPDATE conversations SET {column}=?, updated=? WHERE id=?", (value, time.time(), conversation_id)
        )
        if cur.rowcount == 0:
            raise HistoryError(f"conversation {conversation_id} does not exist (deleted?)")
