"""Prediction-log URLs: a Parquet dataset (a directory or a pyarrow filesystem URL),
``postgresql://...`` or ``none``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Where serve logs and drift reads by default: a Parquet dataset in the working directory.
DEFAULT_LOG_URL = "./predictions/"

#: What a reader says when the URL is ``none``.
LOG_OFF = "the prediction log is off (URL 'none'): there is nothing to read"

ACCEPTED = (
    "a directory such as './predictions/', a filesystem URL such as 'file:///srv/predictions' "
    "or 's3://bucket/prefix' (a Parquet dataset), 'postgresql://user:password@host:5432/database' "
    "or 'none'"
)


@dataclass(frozen=True)
class LogLocation:
    """Where the prediction log lives: a Parquet dataset (``url``) or PostgreSQL (``dsn``)."""

    kind: Literal["parquet", "postgresql"]
    url: str | None  # the dataset's directory or filesystem URL
    dsn: str | None  # PostgreSQL connection string


def parse_log_url(url: str) -> LogLocation | None:
    """The log's location, or None for ``none``; ValueError names the accepted forms."""
    text = url.strip()
    if text.lower() == "none":
        return None
    if not text:
        raise ValueError(f"the prediction-log URL is empty: expected {ACCEPTED}")
    for scheme in ("postgresql://", "postgres://"):
        if text.startswith(scheme):
            return LogLocation("postgresql", None, "postgresql://" + text.removeprefix(scheme))
    if text.startswith("sqlite:"):
        raise ValueError(
            "the SQLite prediction log is retired (the log is a Parquet dataset now): "
            f"expected {ACCEPTED}"
        )
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in ("file", "s3", "gs", "gcs", "abfs", "abfss", "hdfs"):
            raise ValueError(
                f"unsupported prediction-log URL scheme {scheme!r}: expected {ACCEPTED}"
            )
        if not text.split("://", 1)[1].strip("/"):
            raise ValueError(f"the prediction-log URL names no location: expected {ACCEPTED}")
    return LogLocation("parquet", text, None)
