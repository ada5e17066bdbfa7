"""What the writer and the feedback path need from a database (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.predlog.schema import Row

#: (request_id, instance) of one prediction.
Key = tuple[str, int]


class Store(Protocol):
    """One database behind the log; every method raises StoreUnavailable on a database fault."""

    def open(self) -> None:
        """Connect and create or migrate the layout."""

    def insert(self, rows: Sequence[Row]) -> None:
        """Insert rows in one transaction; rows whose row_key exists are skipped."""

    def known(self, model: str, keys: Sequence[Key]) -> set[Key]:
        """Which of ``keys`` have a logged prediction of ``model``."""

    def save_feedback(self, model: str, labels: Sequence[tuple[str, int, str]], at: float) -> None:
        """Store (request_id, instance, label) entries; a later label replaces an earlier one."""

    def delete_before(self, cutoff: float) -> int:
        """Delete predictions logged and feedback received before ``cutoff``; rows deleted."""

    def close(self) -> None:
        """Release connections."""
