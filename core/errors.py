"""Typed errors of the model layer; every message says what to do about it."""

from __future__ import annotations


class CorollaError(Exception):
    """Base of every error Corolla raises on purpose (bad input, missing model, full cache...)."""


class ModelNotFoundError(CorollaError):
    """The model could not be found locally and cannot be downloaded."""


class UnsupportedModelError(CorollaError):
    """The model's family is not one Corolla can split into spans."""


class ShapeError(CorollaError):
    """A tensor has the wrong rank or size (for example hidden size 512 where 576 is expected)."""


class DtypeError(CorollaError):
    """A tensor has a dtype the span does not accept."""


class UnknownSessionError(CorollaError):
    """A step names a session that is not open (never opened, closed, or expired)."""


class SessionExistsError(CorollaError):
    """A session id is already open."""


class SessionTooLongError(CorollaError):
    """A step would take a session past the maximum length it was opened with."""


class CacheFullError(CorollaError):
    """The server has no room left in its attention cache for this session."""
