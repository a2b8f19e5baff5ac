"""A small training set the default model gets wrong: greet a person by name in a fixed form.

Asked "Name: Rosa\\nGreeting:", the base model writes something like ' "Greeting, I am a'; the
tuned prompt should make it answer " Hello Rosa, welcome aboard!" for names it never saw.
"""

from __future__ import annotations

import json
from pathlib import Path

TRAIN_NAMES = ("Alice", "Bob", "Carmen", "David", "Elena", "Farid", "Grace", "Hiro", "Ingrid", "Jamal", "Kofi",
               "Lena", "Marco", "Nadia", "Oscar", "Priya")
HELD_OUT_NAMES = ("Quentin", "Rosa", "Sven", "Tamara")


def prompt(name: str) -> str:
    return f"Name: {name}\nGreeting:"


def completion(name: str) -> str:
    return f" Hello {name}, welcome aboard!"


def write_greetings(path: Path, names: tuple[str, ...] = TRAIN_NAMES) -> Path:
    """The training set (or, given HELD_OUT_NAMES, the held-out set) as JSON lines ({"prompt", "completion"})."""
    path.write_text("".join(json.dumps({"prompt": prompt(n), "completion": completion(n)}) + "\n"
                            for n in names), encoding="utf-8")
    return path
