"""The log in PostgreSQL (the compose stack): the writer's Arrow batches loaded with COPY.

Layout, defined here once: one typed table per (model, version, column layout), its columns
``c0..cN`` in the order of ``service.predlog.layout``'s flat schema (``c0`` is ``logged_at``);
``predlog_tables`` maps each table to its model, version and layout; ``predlog_feedback`` holds
labels; ``predlog_batches`` the ids of the batches loaded, so a replayed batch is skipped;
``predlog_schema`` the layout version (docs/architecture.md, "Prediction log").
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import psycopg
import pyarrow as pa
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from service.predlog.arrow_arrays import texts
from service.predlog.batches import Partition
from service.predlog.errors import PredictionLogError, StoreUnavailable, first_line
from service.predlog.layout import FEEDBACK_SCHEMA, SCHEMA_VERSION, Columns, SchemaTooNew
from service.predlog.pg_binary import binary_copy

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

CREATE_STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS predlog_schema (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS predlog_tables (table_name TEXT PRIMARY KEY, model TEXT NOT NULL, "
    "version INTEGER NOT NULL, columns TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS predlog_batches (batch_id TEXT PRIMARY KEY, "
    "at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS predlog_feedback (model TEXT NOT NULL, "
    "received_at DOUBLE PRECISION NOT NULL, request_id TEXT NOT NULL, instance INTEGER NOT NULL, "
    "label TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS predlog_feedback_model ON predlog_feedback (model, received_at)",
)
#: Arrow type (as text) -> the PostgreSQL column type.
_PG_TYPES = {
    "double": "DOUBLE PRECISION",
    "float": "REAL",
    "string": "TEXT",
    "int32": "INTEGER",
    "bool": "BOOLEAN",
}


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
        self._tables: dict[tuple[str, int, Columns], tuple[str, list[str]]] = {}
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
            for statement in CREATE_STATEMENTS:
                connection.execute(statement.encode())
            found = connection.execute("SELECT max(version) FROM predlog_schema").fetchone()
            current = int(found[0]) if found and found[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"the prediction log has layout version {current}; this code knows up to "
                    f"{SCHEMA_VERSION} (a newer probserve wrote it)"
                )
            if current < SCHEMA_VERSION:
                connection.execute("DELETE FROM predlog_schema")
                connection.execute("INSERT INTO predlog_schema VALUES (%s)", (SCHEMA_VERSION,))
        self._tables.clear()

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

    def write(self, partition: Partition, batch: pa.RecordBatch, batch_id: str) -> None:
        """COPY one batch into its table in one transaction; a batch id already recorded is
        skipped, so replaying a spool twice adds nothing. StoreUnavailable on a fault."""
        if partition.kind == "feedback":  # one table for every model's labels
            model = texts([partition.model] * batch.num_rows)
            batch = pa.RecordBatch.from_arrays(
                [model, *batch.columns], names=["model", *batch.schema.names]
            )
        payload = binary_copy(batch)
        schema = batch.schema

        def work(connection: psycopg.Connection[tuple[Any, ...]]) -> None:
            with connection.transaction():
                table, names = self._table(connection, partition, schema)
                fresh = connection.execute(
                    "INSERT INTO predlog_batches (batch_id, at) VALUES (%s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (batch_id, time.time()),
                )
                if fresh.rowcount == 0:
                    return
                sql = f"COPY {table} ({', '.join(names)}) FROM STDIN WITH (FORMAT binary)"
                with connection.cursor() as cursor, cursor.copy(sql.encode()) as copy:
                    copy.write(payload)

        self._run("write", work)
        if partition.kind == "predictions":  # known to exist once its transaction committed
            key = (partition.model, partition.version or 0, Columns.from_schema(schema))
            self._tables[key] = (table_name(*key), [f"c{i}" for i in range(len(schema))])

    def _table(
        self,
        connection: psycopg.Connection[tuple[Any, ...]],
        partition: Partition,
        schema: pa.Schema,
    ) -> tuple[str, list[str]]:
        """The table (created on first use) and its column names for a batch's schema."""
        if partition.kind == "feedback":
            return "predlog_feedback", ["model", *FEEDBACK_SCHEMA.names]
        assert partition.version is not None
        columns = Columns.from_schema(schema)
        key = (partition.model, partition.version, columns)
        known = self._tables.get(key)
        if known is not None:
            return known
        table = table_name(partition.model, partition.version, columns)
        names = [f"c{i}" for i in range(len(schema))]
        types = [_PG_TYPES[str(f.type)] for f in schema]
        typed = ", ".join(f"{n} {t}" for n, t in zip(names, types, strict=True))
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute(f"CREATE TABLE IF NOT EXISTS {table} ({typed})".encode())
        connection.execute(f"CREATE INDEX IF NOT EXISTS {table}_time ON {table} (c0)".encode())
        connection.execute(
            "INSERT INTO predlog_tables (table_name, model, version, columns) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (table, partition.model, partition.version, columns.to_json()),
        )
        return table, names

    def delete_before(self, cutoff: float) -> int:
        """Retention: delete old predictions, feedback and batch ids; the rows deleted."""

        def work(connection: psycopg.Connection[tuple[Any, ...]]) -> int:
            deleted = 0
            with connection.transaction():
                tables = connection.execute("SELECT table_name FROM predlog_tables").fetchall()
                for (table,) in tables:
                    sql = f"DELETE FROM {table} WHERE c0 < %s"
                    deleted += connection.execute(sql.encode(), (cutoff,)).rowcount
                deleted += connection.execute(
                    "DELETE FROM predlog_feedback WHERE received_at < %s", (cutoff,)
                ).rowcount
                connection.execute("DELETE FROM predlog_batches WHERE at < %s", (cutoff,))
            return deleted

        return self._run("retention", work)

    def close(self) -> None:
        """Close the pool."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def table_name(model: str, version: int, columns: Columns) -> str:
    """A table per (model, version, layout): a readable prefix and a hash, within 63 bytes."""
    digest = hashlib.sha256(f"{model}\0{version}\0{columns.to_json()}".encode()).hexdigest()
    readable = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")[:24]
    return f"predlog_{readable}_v{version}_{digest[:12]}"
