"""Corolla's files that are not code: icons, the style sheet, the default bootstrap list, the
desktop entry. Read them with `files()` (importlib.resources), never by path."""

from importlib.resources import files as _files
from importlib.resources.abc import Traversable


def files() -> Traversable:
    return _files(__name__)
