"""The prediction log's table layout, defined once: the writer inserts it, the drift job reads it.

Tables (docs/architecture.md, "Telemetry seam"):

``predictions``: one row per served instance.
    ``row_key`` TEXT UNIQUE NOT NULL: ``{process token}-{sequence}``, assigned by the writer
    thread; replaying the spool twice cannot insert a row twice (``ON CONFLICT DO NOTHING``).
    ``logged_at`` unix seconds (UTC); ``request_id``; ``instance`` (index in the request);
    ``model``; ``version``; ``protocol`` ('v1' or 'v2'); ``features`` (JSON object
    ``{feature: raw value}``, null = missing); ``probabilities``, ``lower``, ``upper`` (JSON
    objects ``{class: value}``); ``prediction_set`` (JSON list of class labels); ``label`` (the
    predicted class); ``confidence_level``; ``interval_width`` (upper - lower of the predicted
    class); ``set_size``; ``latency_s`` (the request's latency).
    Indexes: (model, logged_at) for the drift window, (request_id, instance) for feedback.

``feedback``: ground truth, primary key (model, request_id, instance); a later label replaces
    an earlier one. ``received_at`` unix seconds.

``schema_version``: one row, the layout version; start-up applies the missing migrations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol

SCHEMA_VERSION: Final = 1

Dialect = Literal["sqlite", "postgresql"]

#: (name, SQLite type, PostgreSQL type) of the ``predictions`` columns, in insert order.
PREDICTION_COLUMNS: Final[tuple[tuple[str, str, str], ...]] = (
    ("row_key", "TEXT NOT NULL UNIQUE", "TEXT NOT NULL UNIQUE"),
    ("logged_at", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    ("request_id", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("instance", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    ("model", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("version", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    ("protocol", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("features", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("probabilities", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("lower", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("upper", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("prediction_set", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("label", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("confidence_level", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    ("interval_width", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    ("set_size", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    ("latency_s", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
)

#: Column names of ``predictions``, in the order of a row tuple.
COLUMN_NAMES: Final = tuple(name for name, _, _ in PREDICTION_COLUMNS)

#: One row of ``predictions`` as the writer produces it (the order of COLUMN_NAMES).
Row = tuple[
    str, float, str, int, str, int, str, str, str, str, str, str, str, float, float, int, float
]

FEEDBACK_COLUMNS: Final = ("model", "request_id", "instance", "label", "received_at")


def _create_statements(dialect: Dialect) -> list[str]:
    """Version 1: the three tables and their indexes."""
    real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
    typed = ", ".join(
        f"{name} {lite if dialect == 'sqlite' else pg}" for name, lite, pg in PREDICTION_COLUMNS
    )
    primary = "INTEGER PRIMARY KEY" if dialect == "sqlite" else "BIGSERIAL PRIMARY KEY"
    return [
        f"CREATE TABLE IF NOT EXISTS predictions (id {primary}, {typed})",
        "CREATE INDEX IF NOT EXISTS predictions_model_time ON predictions (model, logged_at)",
        "CREATE INDEX IF NOT EXISTS predictions_request ON predictions (request_id, instance)",
        "CREATE TABLE IF NOT EXISTS feedback (model TEXT NOT NULL, request_id TEXT NOT NULL, "
        f"instance INTEGER NOT NULL, label TEXT NOT NULL, received_at {real} NOT NULL, "
        "PRIMARY KEY (model, request_id, instance))",
        "CREATE INDEX IF NOT EXISTS feedback_time ON feedback (received_at)",
    ]


#: version -> the statements that bring the previous version to it. A new layout adds an entry
#: (never edits one): databases written by older servers are migrated at start-up.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {1: ()}


def migration(version: int, dialect: Dialect) -> list[str]:
    """The statements of one migration in ``dialect``."""
    if version == 1:
        return _create_statements(dialect)
    return list(MIGRATIONS[version])


def insert_sql(dialect: Dialect) -> str:
    """The idempotent insert of one ``predictions`` row (a replayed row is skipped)."""
    mark = "?" if dialect == "sqlite" else "%s"
    return (
        f"INSERT INTO predictions ({', '.join(COLUMN_NAMES)}) "
        f"VALUES ({', '.join([mark] * len(COLUMN_NAMES))}) ON CONFLICT (row_key) DO NOTHING"
    )


def feedback_upsert_sql(dialect: Dialect) -> str:
    """Store one label; a later label for the same prediction replaces the earlier one."""
    mark = "?" if dialect == "sqlite" else "%s"
    return (
        f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) VALUES "
        f"({', '.join([mark] * len(FEEDBACK_COLUMNS))}) "
        "ON CONFLICT (model, request_id, instance) DO UPDATE SET "
        "label = excluded.label, received_at = excluded.received_at"
    )


def create_sqlite(connection: sqlite3.Connection) -> int:
    """Create or migrate the layout in a SQLite database; the version it started at (0: new).

    ``BEGIN IMMEDIATE`` takes the write lock first, so several worker processes starting on
    one file migrate it once.
    """
    previous_isolation = connection.isolation_level
    connection.isolation_level = None  # explicit transaction control below
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            current = migrate(lambda sql, args: connection.execute(sql, args), "sqlite")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    finally:
        connection.isolation_level = previous_isolation
    return current


class _Cursor(Protocol):
    def fetchone(self) -> Any: ...


def migrate(execute: Callable[[str, tuple[object, ...]], _Cursor], dialect: Dialect) -> int:
    """Create or migrate the layout inside the caller's transaction; the version it found.

    ``execute(sql, args)`` runs one statement on the caller's connection (sqlite3 or psycopg),
    so both stores share the one migration procedure.
    """
    mark = "?" if dialect == "sqlite" else "%s"
    execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", ())
    found = execute("SELECT max(version) FROM schema_version", ()).fetchone()
    current = int(found[0]) if found and found[0] is not None else 0
    check_not_newer(current)
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in migration(version, dialect):
            execute(statement, ())
    if current < SCHEMA_VERSION:
        execute("DELETE FROM schema_version", ())
        execute(f"INSERT INTO schema_version VALUES ({mark})", (SCHEMA_VERSION,))
    return current


def check_not_newer(current: int) -> None:
    """Refuse a database whose layout is newer than this code (SchemaTooNew)."""
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the prediction log has layout version {current}; this server knows up to "
            f"{SCHEMA_VERSION} (a newer probserve wrote it)"
        )


class SchemaTooNew(RuntimeError):
    """The database was written by a newer layout than this code knows."""
