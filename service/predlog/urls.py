"""Prediction-log URLs: ``sqlite:///path``, ``postgresql://...`` or ``none``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ACCEPTED = (
    "'sqlite:///relative/path.sqlite', 'sqlite:////absolute/path.sqlite', "
    "'postgresql://user:password@host:5432/database' or 'none'"
)


@dataclass(frozen=True)
class LogLocation:
    """Where the prediction log lives."""

    kind: Literal["sqlite", "postgresql"]
    path: Path | None  # SQLite file
    dsn: str | None  # PostgreSQL connection string


def parse_log_url(url: str) -> LogLocation | None:
    """The log's location, or None for ``none``; ValueError names the accepted forms."""
    text = url.strip()
    if text.lower() == "none":
        return None
    if text.startswith("sqlite:///"):
        rest = text.removeprefix("sqlite:///")
        if not rest:
            raise ValueError(f"the SQLite URL names no file: expected {ACCEPTED}")
        return LogLocation("sqlite", Path(rest), None)
    for scheme in ("postgresql://", "postgres://"):
        if text.startswith(scheme):
            return LogLocation("postgresql", None, "postgresql://" + text.removeprefix(scheme))
    raise ValueError(f"unsupported prediction-log URL: expected {ACCEPTED}")
