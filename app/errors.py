"""Typed errors of the app layer; each message tells the user what to change."""

from __future__ import annotations

from corolla.core.errors import CorollaError


class SettingsError(CorollaError):
    """A setting has a value Corolla refuses (the message names the setting and why)."""


class HistoryError(CorollaError):
    """The conversation store cannot be opened or does not hold the asked-for item."""


class ContributionError(CorollaError):
    """The contributing server process could not be started or failed."""


class ChatBackendError(CorollaError):
    """A generation could not start or failed (no swarm, missing blocks, network down)."""


def corolla_error_in(exc: BaseException, also: tuple[type[BaseException], ...] = ()) -> BaseException | None:
    """The CorollaError (or one of the `also` types) inside `exc`, looking through exception groups
    (trio nurseries wrap the errors of their tasks); None if there is none."""
    if isinstance(exc, (CorollaError, *also)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = corolla_error_in(inner, also)
            if found is not None:
                return found
    return None
