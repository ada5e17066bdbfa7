"""Read the PostgreSQL log's tables back as Arrow tables: ``COPY ... TO STDOUT`` parsed by Arrow."""

from __future__ import annotations

import io
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv

from service.predlog.errors import first_line
from service.predlog.layout import (
    FEEDBACK_SCHEMA,
    META_SCHEMA_VERSION,
    Columns,
    check_schema_version,
)
from service.predlog.postgres_store import CLIENT_ENCODING, describe

#: (version, its column layout, its rows).
Part = tuple[int, Columns, pa.Table]


def _connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        return psycopg.connect(dsn, connect_timeout=10, client_encoding=CLIENT_ENCODING)
    except psycopg.Error as exc:
        raise ValueError(f"cannot connect to PostgreSQL at {describe(dsn)}") from exc


def _csv_table(data: bytes, schema: pa.Schema) -> pa.Table:
    """COPY's CSV as a table of ``schema``: an unquoted empty field is NULL, ``""`` is ""."""
    if not data:
        return schema.empty_table()
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=schema.names),
        # A category may hold a line break inside its quotes: without this Arrow splits its
        # parse blocks there and a window past one block (1 MiB) fails to read.
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=schema,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )


def _copy_out(connection: psycopg.Connection[tuple[Any, ...]], sql: str, args: list[Any]) -> bytes:
    with connection.cursor() as cursor, cursor.copy(sql.encode(), args) as copy:
        return b"".join(bytes(chunk) for chunk in copy)


def postgres_parts(
    dsn: str,
    model: str,
    version: int | None,
    since: float | None,
    until: float | None,
    last: int | None,
) -> list[Part]:
    """Every table of ``model`` (of ``version``), rows in [since, until), newest ``last``."""
    with _connect(dsn) as connection:
        try:
            found = connection.execute("SELECT max(version) FROM predlog_schema").fetchone()
            check_schema_version(
                {
                    META_SCHEMA_VERSION: str(
                        found[0] if found and found[0] is not None else 0
                    ).encode()
                }
            )
            sql = "SELECT table_name, version, columns FROM predlog_tables WHERE model = %s"
            args: list[Any] = [model]
            if version is not None:
                sql += " AND version = %s"
                args.append(version)
            tables = connection.execute(sql.encode(), args).fetchall()
            parts = []
            for table, table_version, layout in tables:
                columns = Columns.from_json(layout)
                schema = columns.schema()
                where, values = ["TRUE"], []
                if since is not None:
                    where.append("c0 >= %s")
                    values.append(since)
                if until is not None:
                    where.append("c0 < %s")
                    values.append(until)
                names = ", ".join(f"c{i}" for i in range(len(schema)))
                query = f"SELECT {names} FROM {table} WHERE {' AND '.join(where)}"
                if last is not None:
                    query += " ORDER BY c0 DESC, c2 DESC LIMIT %s"
                    values.append(last)
                data = _copy_out(connection, f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", values)
                parts.append((int(table_version), columns, _csv_table(data, schema)))
        except psycopg.Error as exc:
            raise ValueError(f"the prediction log cannot be read: {first_line(exc)}") from exc
    return parts


def postgres_feedback(dsn: str, model: str) -> pa.Table:
    """Every label of ``model`` (received_at, request_id, instance, label)."""
    with _connect(dsn) as connection:
        try:
            names = ", ".join(FEEDBACK_SCHEMA.names)
            query = f"SELECT {names} FROM predlog_feedback WHERE model = %s"
            data = _copy_out(connection, f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", [model])
        except psycopg.Error as exc:
            raise ValueError(f"the prediction log cannot be read: {first_line(exc)}") from exc
    return _csv_table(data, FEEDBACK_SCHEMA)
