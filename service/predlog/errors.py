"""The prediction log's errors."""

from __future__ import annotations


class PredictionLogError(RuntimeError):
    """The log cannot work as configured (bad URL, unusable file); a one-line message."""


class StoreUnavailable(Exception):
    """The database did not take a write or a read now (down, locked, disk full): retry later."""
