"""The drift job's window of the log: one DataFrame row per logged instance.

Columns: the scalar prediction columns (BASE_COLUMNS), one column per feature (numeric ->
float64 with NaN, categorical -> object str with None), one per class probability named like
the bundle's reference (REFERENCE_PROBABILITY_PREFIX + class), and ``true_label`` from the
feedback table (None without feedback). JSON is decoded a chunk at a time by one orjson call
over the chunk (docs/architecture.md, "Telemetry seam").
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd
import psycopg
from numpy.typing import NDArray

from service.bundle.manifest import REFERENCE_PROBABILITY_PREFIX
from service.predlog.postgres_store import CLIENT_ENCODING, describe, first_line
from service.predlog.urls import parse_log_url

BASE_COLUMNS = (
    "logged_at",
    "request_id",
    "instance",
    "model",
    "version",
    "protocol",
    "confidence_level",
    "label",
    "interval_width",
    "set_size",
    "latency_s",
)
_INTEGER = {"instance", "version", "set_size"}
_FLOAT = {"logged_at", "confidence_level", "interval_width", "latency_s"}
TRUE_LABEL = "true_label"
CHUNK_ROWS = 100_000

FeatureType = Literal["numeric", "categorical"]


def _query(
    mark: str, version: int | None, since: float | None, until: float | None, last: int | None
) -> tuple[str, list[object]]:
    select = ", ".join(f"p.{c}" for c in BASE_COLUMNS)
    where = [f"p.model = {mark}"]
    args: list[object] = []
    for clause, value in (
        (f"p.version = {mark}", version),
        (f"p.logged_at >= {mark}", since),
        (f"p.logged_at < {mark}", until),
    ):
        if value is not None:
            where.append(clause)
            args.append(value)
    inner = (
        f"SELECT p.id, {select}, p.features, p.probabilities, f.label AS {TRUE_LABEL} "
        "FROM predictions p LEFT JOIN feedback f ON f.model = p.model "
        "AND f.request_id = p.request_id AND f.instance = p.instance "
        f"WHERE {' AND '.join(where)}"
    )
    if last is None:
        return inner + " ORDER BY p.logged_at, p.id", args
    # The newest ``last`` rows, returned oldest first.
    return (
        f"SELECT * FROM ({inner} ORDER BY p.logged_at DESC, p.id DESC LIMIT {mark}) AS w "
        "ORDER BY w.logged_at, w.id",
        [*args, last],
    )


def _chunks_sqlite(path: str, sql: str, args: list[object]) -> Iterator[list[tuple[Any, ...]]]:
    uri = f"file:{urllib.parse.quote(path)}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise ValueError("no prediction log database at that URL (nothing logged yet?)") from exc
    with closing(connection):
        try:
            cursor = connection.execute(sql, args)
        except sqlite3.Error as exc:
            raise ValueError(f"the prediction log cannot be read: {first_line(exc)}") from exc
        while chunk := cursor.fetchmany(CHUNK_ROWS):
            yield chunk


def _chunks_postgres(dsn: str, sql: str, args: list[object]) -> Iterator[list[tuple[Any, ...]]]:
    try:
        connection = psycopg.connect(dsn, connect_timeout=10, client_encoding=CLIENT_ENCODING)
    except psycopg.Error as exc:
        raise ValueError(f"cannot connect to PostgreSQL at {describe(dsn)}") from exc
    with connection, connection.cursor(name="predlog_window") as cursor:
        try:
            cursor.execute(sql.encode(), args)
            while chunk := cursor.fetchmany(CHUNK_ROWS):
                yield chunk
        except psycopg.Error as exc:
            raise ValueError(f"the prediction log cannot be read: {first_line(exc)}") from exc


def _decode(texts: Sequence[str]) -> list[dict[str, Any]]:
    """One orjson call over a chunk's JSON objects."""
    decoded: list[dict[str, Any]] = orjson.loads("[" + ",".join(texts) + "]")
    return decoded


def read_window(
    url: str,
    model: str,
    *,
    version: int | None = None,
    since: float | None = None,
    until: float | None = None,
    last: int | None = None,
    feature_types: Mapping[str, FeatureType] | None = None,
) -> pd.DataFrame:
    """Logged predictions of ``model`` (``since`` <= logged_at < ``until``, the newest
    ``last``), oldest first. Without ``feature_types`` a feature whose values are all numbers
    is numeric. ValueError (one line) when the log cannot be read."""
    location = parse_log_url(url)
    if location is None:
        raise ValueError("the prediction log is off (URL 'none'): there is nothing to read")
    if last is not None and last < 1:
        raise ValueError("last must be at least 1")
    if location.kind == "sqlite":
        sql, args = _query("?", version, since, until, last)
        chunks = _chunks_sqlite(str(location.path), sql, [model, *args])
    else:
        assert location.dsn is not None
        sql, args = _query("%s", version, since, until, last)
        chunks = _chunks_postgres(location.dsn, sql, [model, *args])
    # One chunk at a time becomes columns, so the decoded JSON of only one chunk is alive at
    # once: a 1M-row window held 1M dicts per JSON column before (4.7 GiB in make bench-drift).
    frames: list[pd.DataFrame] = []
    for chunk in chunks:
        columns = list(zip(*chunk, strict=True))
        base = [list(columns[i + 1]) for i in range(len(BASE_COLUMNS))]
        frames.append(
            _frame(
                base,
                _decode(columns[-3]),
                _decode(columns[-2]),
                list(columns[-1]),
                feature_types,
            )
        )
    if not frames:
        return _frame([[] for _ in BASE_COLUMNS], [], [], [], feature_types)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _frame(
    base: list[list[Any]],
    features: list[dict[str, Any]],
    probabilities: list[dict[str, Any]],
    truth: list[Any],
    feature_types: Mapping[str, FeatureType] | None,
) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name, values in zip(BASE_COLUMNS, base, strict=True):
        if name in _INTEGER:
            data[name] = np.asarray(values, dtype=np.int64)
        elif name in _FLOAT:
            data[name] = np.asarray(values, dtype=np.float64)
        else:
            data[name] = pd.Series(values, dtype=object)
    names = list(feature_types) if feature_types is not None else _keys(features)
    for name in names:
        if name in data or name == TRUE_LABEL:
            raise ValueError(f"feature {name!r} has the name of a prediction-log column")
        values = [row.get(name) for row in features]
        kind = feature_types[name] if feature_types is not None else _infer(values)
        if kind == "numeric":
            data[name] = _numeric(values)
        else:
            data[name] = pd.Series([None if v is None else str(v) for v in values], dtype=object)
    for label in _keys(probabilities):
        data[f"{REFERENCE_PROBABILITY_PREFIX}{label}"] = np.asarray(
            [row.get(label, np.nan) for row in probabilities], dtype=np.float64
        )
    data[TRUE_LABEL] = pd.Series(truth, dtype=object)
    return pd.DataFrame(data)


def _numeric(values: list[Any]) -> NDArray[np.float64] | pd.Series:
    """Numbers (None -> NaN) as float64; anything else a number cannot be also becomes NaN."""
    try:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):  # a value that is not a number: coerce it to NaN
        series = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
        return series.astype(np.float64)


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    """Every key, in the order first seen (rows of one model share them, so this is quick)."""
    seen: dict[str, None] = {}
    last: Any = None
    for row in rows:
        keys = row.keys()
        if keys != last:
            seen.update(dict.fromkeys(keys))
            last = keys
    return list(seen)


def _infer(values: list[Any]) -> FeatureType:
    numeric = all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
    )
    return "numeric" if numeric else "categorical"
