"""The prediction log's errors."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (PostgreSQL adds LINE and caret lines to SQL errors)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PredictionLogError(RuntimeError):
    """The log cannot work as configured (bad URL, unusable file); a one-line message."""


class StoreUnavailable(Exception):
    """The database did not take a write or a read now (down, locked, disk full): retry later."""
