"""Where Corolla keeps its files: the user's config and data dirs (platformdirs).

`COROLLA_CONFIG_DIR` and `COROLLA_DATA_DIR` override them (tests, portable installs).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "Corolla"


def config_dir() -> Path:
    """The directory holding settings.json, created if missing."""
    return _ensure(os.environ.get("COROLLA_CONFIG_DIR") or platformdirs.user_config_dir(APP_NAME, False))


def data_dir() -> Path:
    """The directory holding the conversation history, created if missing."""
    return _ensure(os.environ.get("COROLLA_DATA_DIR") or platformdirs.user_data_dir(APP_NAME, False))


def _ensure(path: str) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p
