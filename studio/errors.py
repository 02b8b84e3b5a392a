"""Errors the user can act on.

Anything raised as :class:`StudioError` is bad input, not a bug: the CLI prints its message on one
line and exits with status 2, the app shows it as a warning. Every other exception is an internal
error (exit status 1).
"""

from __future__ import annotations

__all__ = ["StudioError", "DataError", "BackboneError", "RunError", "first_line"]


class StudioError(Exception):
    """Bad input with a message written for the person who gave it."""


class DataError(StudioError):
    """The images or labels cannot be used as given."""


class BackboneError(StudioError):
    """The backbone is unknown or its weights cannot be had."""


class RunError(StudioError):
    """A run folder is missing, incomplete or from an incompatible version."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of a library's error, for a one-line message (torch's refusal to unpickle
    runs to six lines)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
