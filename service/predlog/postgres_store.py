"""The log in PostgreSQL: psycopg 3 through a psycopg_pool connection pool."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from service.predlog.errors import PredictionLogError, StoreUnavailable
from service.predlog.schema import (
    Row,
    feedback_upsert_sql,
    insert_sql,
    migrate,
)
from service.predlog.store import Key

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds to wait for a connection before the batch is spooled (the writer thread blocks).
CONNECT_TIMEOUT_S = 3
#: Every connection of the log, writing or reading, talks UTF-8 whatever the database's own
#: encoding: a database made without a locale is SQL_ASCII, where psycopg would hand text
#: columns back as bytes and could not send a non-ASCII category at all.
CLIENT_ENCODING = "UTF8"
#: Arbitrary advisory-lock key: workers starting together migrate the layout once.
MIGRATION_LOCK = 0x70726564  # "pred"


def describe(dsn: str) -> str:
    """``host:port/database`` of a connection string, never its password (for messages)."""
    params = conninfo_to_dict(dsn)
    host, port = params.get("host", "localhost"), str(params.get("port", 5432))
    if not all(part.isdigit() for part in port.split(",")):
        raise psycopg.ProgrammingError("the port is not a number")
    return f"{host}:{port}/{params.get('dbname', '')}"


class PostgresStore:
    """A small pool; after a fault it is replaced by a fresh one on the next ``open``."""

    def __init__(self, dsn: str) -> None:
        """Check the connection string's syntax now (PredictionLogError), connect later."""
        try:
            self.where = describe(dsn)
        except psycopg.Error as exc:
            raise PredictionLogError(
                "the PostgreSQL prediction-log URL is malformed (expected "
                "postgresql://user:password@host:5432/database)"
            ) from exc
        self._dsn = dsn
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """A fresh pool, then create or migrate the layout; StoreUnavailable when unreachable."""
        try:
            # One direct attempt first: a refused connection fails at once here, where the
            # pool would keep retrying until its timeout while the writer thread waits.
            psycopg.connect(
                self._dsn, connect_timeout=CONNECT_TIMEOUT_S, client_encoding=CLIENT_ENCODING
            ).close()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL at {self.where}: {first_line(exc)}") from exc
        with self._lock:
            if self._pool is not None:
                self._pool.close()
            self._pool = ConnectionPool(
                self._dsn,
                min_size=1,
                max_size=4,
                open=False,
                timeout=CONNECT_TIMEOUT_S,
                kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "client_encoding": CLIENT_ENCODING},
                check=ConnectionPool.check_connection,
                name="probserve-prediction-log",
            )
            self._pool.open(wait=False)
        try:
            self._migrate()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"PostgreSQL at {self.where}: {first_line(exc)}") from exc

    def _migrate(self) -> None:
        with self._connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            migrate(lambda sql, args: connection.execute(sql.encode(), args), "postgresql")

    def _connection(self) -> AbstractContextManager[psycopg.Connection[tuple[Any, ...]]]:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL log is not open")
        return self._pool.connection()

    def _run(self, what: str, work: Callable[[psycopg.Connection[tuple[Any, ...]]], T]) -> T:
        try:
            with self._connection() as connection:
                return work(connection)
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreUnavailable(f"PostgreSQL {what} at {self.where}: {first_line(exc)}") from exc

    def insert(self, rows: Sequence[Row]) -> None:
        """Insert rows in one transaction (executemany runs pipelined in psycopg 3)."""

        def work(connection: psycopg.Connection[tuple[Any, ...]]) -> None:
            with connection.cursor() as cursor:
                cursor.executemany(insert_sql("postgresql").encode(), rows)

        self._run("insert", work)

    def known(self, model: str, keys: Sequence[Key]) -> set[Key]:
        """Keys of ``model`` with a logged prediction."""

        def work(connection: psycopg.Connection[tuple[Any, ...]]) -> set[Key]:
            cursor = connection.execute(
                "SELECT DISTINCT p.request_id, p.instance FROM predictions p "
                "JOIN unnest(%s::text[], %s::int[]) AS k(request_id, instance) "
                "ON p.request_id = k.request_id AND p.instance = k.instance WHERE p.model = %s",
                ([k[0] for k in keys], [k[1] for k in keys], model),
            )
            return {(str(r), int(i)) for r, i in cursor}

        return self._run("read", work)

    def save_feedback(self, model: str, labels: Sequence[tuple[str, int, str]], at: float) -> None:
        """Upsert labels in one transaction."""

        def work(connection: psycopg.Connection[tuple[Any, ...]]) -> None:
            with connection.cursor() as cursor:
                cursor.executemany(
                    feedback_upsert_sql("postgresql").encode(),
                    [(model, r, i, label, at) for r, i, label in labels],
                )

        self._run("feedback", work)

    def delete_before(self, cutoff: float) -> int:
        """Retention: delete old predictions and feedback."""

        def work(connection: psycopg.Connection[tuple[Any, ...]]) -> int:
            a = connection.execute("DELETE FROM predictions WHERE logged_at < %s", (cutoff,))
            b = connection.execute("DELETE FROM feedback WHERE received_at < %s", (cutoff,))
            return a.rowcount + b.rowcount

        return self._run("retention", work)

    def close(self) -> None:
        """Close the pool."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (PostgreSQL adds LINE and caret lines to SQL errors)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
