"""A conversation as a file a person or a program can read: Markdown, or JSON."""

from __future__ import annotations

import json
from pathlib import Path

from corolla.app.chat.history import Conversation, Message

SPEAKERS = {"user": "You", "assistant": "Assistant", "system": "System"}
FORMATS = ("markdown", "json")


def to_markdown(conversation: Conversation, messages: list[Message]) -> str:
    lines = [f"# {conversation.title}", ""]
    if conversation.system_prompt.strip():
        lines += [f"*System prompt:* {conversation.system_prompt.strip()}", ""]
    for m in messages:
        note = "" if m.state == "complete" else f" *({m.state})*"
        lines += [f"**{SPEAKERS.get(m.role, m.role)}**{note}", "", m.content, ""]
    return "\n".join(lines)


def to_json(conversation: Conversation, messages: list[Message]) -> str:
    """The OpenAI-style message list, with the title and each message's state."""
    data = {
        "title": conversation.title,
        "messages": ([{"role": "system", "content": conversation.system_prompt}]
                     if conversation.system_prompt.strip() else [])
        + [{"role": m.role, "content": m.content, "state": m.state} for m in messages],
    }
    return json.dumps(data, indent=2, ensure_ascii=False)


def export(path: Path, fmt: str, conversation: Conversation, messages: list[Message]) -> Path:
    """Write the conversation to `path` as `fmt` (markdown or json)."""
    text = to_markdown(conversation, messages) if fmt == "markdown" else to_json(conversation, messages)
    Path(path).write_text(text, encoding="utf-8")
    return Path(path)
