"""The columnar prediction log: URLs, Arrow batches, Parquet spools and segments, the reader.

Write-read round trips run against a Parquet dataset and a real PostgreSQL, in a UTF-8
database and in a SQL_ASCII one (what a cluster made without a locale has), through the same
``read_window``. Expected values are written out by hand: binary fractions (0.375, 0.4375...)
so that equality is exact.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from service.bundle.manifest import REFERENCE_PROBABILITY_PREFIX as P
from service.predlog import (
    FeedbackCounts,
    FeedbackLabel,
    LogLocation,
    PredictionLog,
    PredictionLogError,
    PredictionRecord,
    parse_log_url,
)
from service.predlog.batches import columns_of, feedback_batch, prediction_batch
from service.predlog.layout import META_SCHEMA_VERSION, Columns, file_metadata
from service.predlog.reader import BASE_COLUMNS, read_window
from service.predlog.record import FeedbackRecord
from service.predlog.spool import BATCH_ID, SpoolFile, read_spool
from tests.pg_support import PostgresServer, running_postgres
from tests.service.predlog_support import segment_rows, segments, spools, torn_spool

DAY = 86400.0
TYPES: dict[str, Any] = {"x": "numeric", "c": "categorical"}


def record(
    i: int,
    rows: int = 1,
    *,
    model: str = "m",
    version: int = 1,
    at: float | None = None,
    category: str = "u",
) -> PredictionRecord:
    """Request ``r{i}``: ``rows`` instances of a two-class model, logged at ``i`` seconds.

    Instance k has x = k + 0.5; every row predicts "a" (0.75 in [0.625, 0.875], width 0.25)
    and its set is {a}.
    """
    x = np.arange(rows, dtype=np.float32).reshape(rows, 1) + np.float32(0.5)
    p = np.tile([0.75, 0.25], (rows, 1))
    return PredictionRecord(
        logged_at=float(i) if at is None else at,
        request_id=f"r{i}",
        model=model,
        version=version,
        protocol="v1",
        classes=["a", "b"],
        features={"x": x, "c": np.full((rows, 1), category, dtype=object)},
        probabilities=p,
        lower=p - 0.125,
        upper=p + 0.125,
        prediction_sets=np.tile([True, False], (rows, 1)),
        labels=["a"] * rows,
        confidence_level=0.9,
        latency_s=0.002,
    )


class Outcomes:
    """``on_rows`` that counts outcomes (thread-safe)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, outcome: str, rows: int) -> None:
        with self._lock:
            self.counts[outcome] += rows


def parquet_log(tmp_path: Path, **kwargs: Any) -> tuple[PredictionLog, Path]:
    """A Parquet log under tmp_path/log spooling in tmp_path/spool; (log, dataset root)."""
    root = tmp_path / "log"
    kwargs.setdefault("spool_dir", tmp_path / "spool")
    return PredictionLog(str(root), **kwargs), root


def schema_with_partition(columns: Columns, model: str, version: int, date: str) -> pa.Schema:
    return columns.schema().with_metadata(file_metadata("predictions", model, version, date))


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """One cluster for the module (initdb costs seconds); each test gets its own database."""
    with running_postgres() as server:
        yield server


def fresh_database(pg: PostgresServer, encoding: str | None = None) -> str:
    return pg.create_database(f"t_{uuid.uuid4().hex[:12]}", encoding)


@pytest.fixture(params=["parquet", "postgresql", "postgresql-sql-ascii"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty prediction log in each store the reader serves."""
    if request.param == "parquet":
        return str(tmp_path / "log")
    pg: PostgresServer = request.getfixturevalue("pg")
    return fresh_database(pg, "SQL_ASCII" if request.param.endswith("ascii") else None)


# -- URLs -----------------------------------------------------------------------------------------


def test_urls() -> None:
    assert parse_log_url("none") is None
    assert parse_log_url(" None ") is None
    for url in ("./predictions/", "/srv/predictions", "file:///srv/p", "s3://bucket/prefix"):
        assert parse_log_url(url) == LogLocation("parquet", url, None)
    pg = LogLocation("postgresql", None, "postgresql://u:pw@h:5432/db")
    assert parse_log_url("postgres://u:pw@h:5432/db") == pg
    assert parse_log_url("postgresql://u:pw@h:5432/db") == pg
    cases = {
        "sqlite:///./p.sqlite": "SQLite prediction log is retired",
        "sqlite:////abs/p.sqlite": "SQLite prediction log is retired",
        "mysql://h/db": "unsupported prediction-log URL scheme 'mysql'",
        "": "empty",
        "   ": "empty",
        "file://": "names no location",
        "s3:///": "names no location",
    }
    for bad, message in cases.items():
        with pytest.raises(ValueError, match=message) as error:
            parse_log_url(bad)
        text = str(error.value)
        assert "\n" not in text and "postgresql://user:password@host" in text  # the accepted forms


def test_bad_urls_fail_at_construction_in_one_line(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    cases = {
        "mysql://u:secret@h/db": "unsupported prediction-log URL",
        "sqlite:///secret/p.sqlite": "SQLite prediction log is retired",
        "postgresql://u:secret@h:notaport/db": "malformed",
        "postgresql://u:secret@h/db?nonsense=1": "malformed",
        "none": "off",
    }
    for url, message in cases.items():
        with pytest.raises(PredictionLogError, match=message) as error:
            PredictionLog(url, spool_dir=spool)
        assert "secret" not in str(error.value) and "\n" not in str(error.value)
    assert not spool.exists()  # construction touches nothing


def test_a_log_directory_that_cannot_be_made_spools_until_it_can(tmp_path: Path) -> None:
    # As for a database that is down: the server keeps serving, rows wait in the local spool,
    # and reach the dataset once its directory can be made (a late volume, space freed).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    outcomes = Outcomes()
    log = PredictionLog(
        str(blocker / "log"), spool_dir=tmp_path / "spool", retry_interval_s=0.05, on_rows=outcomes
    )
    log.start()
    try:
        log.enqueue(record(1, rows=3))
        assert log.flush(10.0)
        assert outcomes.counts["spooled"] == 3 and outcomes.counts["written"] == 0
        blocker.unlink()
        deadline = time.monotonic() + 10.0
        while outcomes.counts["replayed"] < 3 and time.monotonic() < deadline:
            log.enqueue(record(2))
            assert log.flush(10.0)
            time.sleep(0.05)
        assert outcomes.counts["replayed"] == 3
        assert log.flush(10.0, seal=True)
    finally:
        log.stop()
    frame = read_window(str(blocker / "log"), "m")
    assert "r1" in set(frame["request_id"])


# -- Arrow batches ----------------------------------------------------------------------------


def test_prediction_batch_hand_computed() -> None:
    """Two requests, three classes: every column of the batch, written out by hand."""
    first = PredictionRecord(
        logged_at=12.5,
        request_id="req",
        model="m",
        version=3,
        protocol="v2",
        classes=["a", "b", "c"],
        features={
            "x": np.array([[1.5], [np.nan]], dtype=np.float32),
            "c": np.array([["u"], [""]], dtype=object),
        },
        probabilities=np.array([[0.5, 0.25, 0.25], [0.125, 0.25, 0.625]]),
        lower=np.array([[0.375, 0.125, 0.125], [0.0, 0.125, 0.5]]),
        upper=np.array([[0.75, 0.5, 0.375], [0.25, 0.375, 0.9375]]),
        prediction_sets=np.array([[True, True, False], [False, False, True]]),
        labels=["a", "c"],
        confidence_level=0.95,
        latency_s=0.25,
    )
    second = PredictionRecord(
        logged_at=20.0,
        request_id="req2",
        model="m",
        version=3,
        protocol="v1",
        classes=["a", "b", "c"],
        features={
            "x": np.array([[-2.25]], dtype=np.float32),
            "c": np.array([["é"]], dtype=object),
        },
        probabilities=np.array([[0.25, 0.5, 0.25]]),
        lower=np.array([[0.125, 0.25, 0.0625]]),
        upper=np.array([[0.375, 0.8125, 0.5]]),
        prediction_sets=np.array([[True, True, True]]),
        labels=["b"],
        confidence_level=0.9,
        latency_s=0.5,
    )
    columns = columns_of(first)
    assert columns == Columns((("x", "numeric"), ("c", "categorical")), ("a", "b", "c"))
    batch = prediction_batch([first, second], columns)
    f64, f32, text, i32, flag = pa.float64(), pa.float32(), pa.string(), pa.int32(), pa.bool_()
    assert [(f.name, f.type) for f in batch.schema] == [
        ("logged_at", f64), ("request_id", text), ("instance", i32), ("protocol", text),
        ("label", text), ("confidence_level", f64), ("interval_width", f64),
        ("set_size", i32), ("latency_s", f64), ("features.x", f32), ("features.c", text),
        ("probabilities.a", f64), ("probabilities.b", f64), ("probabilities.c", f64),
        ("lower.a", f64), ("lower.b", f64), ("lower.c", f64),
        ("upper.a", f64), ("upper.b", f64), ("upper.c", f64),
        ("prediction_set.a", flag), ("prediction_set.b", flag), ("prediction_set.c", flag),
    ]  # fmt: skip
    assert batch.to_pydict() == {
        "logged_at": [12.5, 12.5, 20.0],  # per request, repeated for each instance
        "request_id": ["req", "req", "req2"],
        "instance": [0, 1, 0],  # numbered within each request
        "protocol": ["v2", "v2", "v1"],
        "label": ["a", "c", "b"],
        "confidence_level": [0.95, 0.95, 0.9],
        # upper - lower of the predicted class: a 0.75-0.375; c 0.9375-0.5; b 0.8125-0.25
        "interval_width": [0.375, 0.4375, 0.5625],
        "set_size": [2, 1, 3],
        "latency_s": [0.25, 0.25, 0.5],
        "features.x": [1.5, None, -2.25],  # NaN is missing
        "features.c": ["u", None, "é"],  # "" is missing
        "probabilities.a": [0.5, 0.125, 0.25],
        "probabilities.b": [0.25, 0.25, 0.5],
        "probabilities.c": [0.25, 0.625, 0.25],
        "lower.a": [0.375, 0.0, 0.125],
        "lower.b": [0.125, 0.125, 0.25],
        "lower.c": [0.125, 0.5, 0.0625],
        "upper.a": [0.75, 0.25, 0.375],
        "upper.b": [0.5, 0.375, 0.8125],
        "upper.c": [0.375, 0.9375, 0.5],
        "prediction_set.a": [True, False, True],
        "prediction_set.b": [True, False, True],
        "prediction_set.c": [False, True, True],
    }
    # The group converts as the requests would one at a time.
    alone = [prediction_batch([r], columns) for r in (first, second)]
    assert pa.Table.from_batches(alone).equals(pa.Table.from_batches([batch]))


def test_categorical_values_become_text_or_null() -> None:
    """An object column may hold numbers (their text), None and "" (null); so may a str one."""
    rec = dataclasses.replace(
        record(0, rows=3),
        features={
            "x": np.array([[0.5], [1.5], [2.5]], dtype=np.float32),
            "c": np.array([[3], [None], [""]], dtype=object),
        },
    )
    batch = prediction_batch([rec], Columns((("x", "numeric"), ("c", "categorical")), ("a", "b")))
    assert batch.column("features.c").to_pylist() == ["3", None, None]
    unicode_column = dataclasses.replace(
        rec, features={"x": rec.features["x"], "c": np.array([["k"], [""], ["é"]])}
    )
    batch = prediction_batch([unicode_column], columns_of(unicode_column))
    assert batch.column("features.c").to_pylist() == ["k", None, "é"]


def test_numeric_block_and_per_feature_columns_give_the_same_batch() -> None:
    """The native codec hands the log its numeric [F, N] block; V2 requests come as columns."""
    x = np.array([[0.5], [1.5], [np.nan]], dtype=np.float32)
    y = np.array([[-1.0], [np.nan], [4.0]], dtype=np.float32)
    n = 3
    p = np.tile([[0.25, 0.75]], (n, 1))

    def rec(block: bool, categorical: bool) -> PredictionRecord:
        features: dict[str, Any] = {"x": x, "y": y}
        if categorical:  # between the numeric ones, as graph order may put it
            features = {"x": x, "c": np.array([["k"]] * n, dtype=object), "y": y}
        numeric = (("x", "y"), np.ascontiguousarray(np.hstack([x, y]).T)) if block else None
        return PredictionRecord(
            logged_at=1.0, request_id="r", model="m", version=1, protocol="v1",
            classes=["a", "b"], features=features, probabilities=p, lower=p - 0.125,
            upper=p + 0.125, prediction_sets=np.ones((n, 2), bool), labels=["b"] * n,
            confidence_level=0.9, latency_s=0.01, numeric=numeric,
        )  # fmt: skip

    for categorical in (False, True):
        columns = columns_of(rec(False, categorical))
        assert columns == columns_of(rec(True, categorical))
        with_block = prediction_batch([rec(True, categorical)] * 2, columns)
        without = prediction_batch([rec(False, categorical)] * 2, columns)
        assert with_block.equals(without)
        features = [name for name in with_block.schema.names if name.startswith("features.")]
        assert features == ["features.x", *(["features.c"] if categorical else []), "features.y"]
        assert with_block.column("features.x").to_pylist() == [0.5, 1.5, None] * 2
        assert with_block.column("features.y").to_pylist() == [-1.0, None, 4.0] * 2
        assert with_block.column("instance").to_pylist() == [0, 1, 2, 0, 1, 2]


def test_feedback_batch_hand_computed() -> None:
    group = [
        FeedbackRecord(5.0, "m", ["r1", "r2"], [0, 3], ["a", "b"]),
        FeedbackRecord(7.5, "m", ["r1"], [0], ["b"]),
    ]
    assert feedback_batch(group).to_pydict() == {
        "received_at": [5.0, 5.0, 7.5],
        "request_id": ["r1", "r2", "r1"],
        "instance": [0, 3, 0],
        "label": ["a", "b", "b"],
    }


# -- write, read, feedback ------------------------------------------------------------------------


def test_round_trip_window_and_feedback(tmp_path: Path, log_url: str) -> None:
    url = log_url
    outcomes = Outcomes()
    log = PredictionLog(url, spool_dir=tmp_path / "spool", on_rows=outcomes)
    log.start()
    for i in range(10):
        assert log.enqueue(record(i, rows=2, version=1 if i < 5 else 2))
    assert log.enqueue(record(99, model="other"))
    counts = log.record_feedback(
        "m",
        [
            FeedbackLabel("r1", 0, "b"),
            FeedbackLabel("r1", 1, "a"),  # replaced by the later label below
            FeedbackLabel("r1", 2, "a"),  # no instance 2
            FeedbackLabel("r99", 0, "a"),  # another model's prediction
            FeedbackLabel("r2", 0, "zebra"),  # not a class: refused at once
        ],
        {"a", "b"},
    )
    assert counts == FeedbackCounts(accepted=4, unknown=0, invalid=1)
    time.sleep(0.01)  # the later label is received later
    later = log.record_feedback("m", [FeedbackLabel("r1", 1, "b")], {"a", "b"})
    assert later == FeedbackCounts(accepted=1, unknown=0, invalid=0)
    log.stop()
    assert outcomes.counts == {"queued": 26, "written": 26}  # 21 predictions, 5 labels

    frame = read_window(url, "m", feature_types=TYPES)
    assert len(frame) == 20
    assert tuple(frame.columns[:11]) == BASE_COLUMNS
    assert list(frame.columns[11:]) == ["x", "c", f"{P}a", f"{P}b", "true_label"]
    assert frame["x"].dtype == np.float64 and frame["c"].dtype == object
    assert frame["logged_at"].tolist() == [float(i // 2) for i in range(20)]
    assert frame["request_id"].tolist() == [f"r{i // 2}" for i in range(20)]
    assert frame["instance"].tolist() == [0, 1] * 10
    assert frame["version"].tolist() == [1] * 10 + [2] * 10
    assert set(frame["model"]) == {"m"} and set(frame["protocol"]) == {"v1"}
    assert frame["x"].tolist() == [0.5, 1.5] * 10
    assert frame["c"].tolist() == ["u"] * 20
    assert frame[f"{P}a"].tolist() == [0.75] * 20 and frame[f"{P}b"].tolist() == [0.25] * 20
    assert frame["interval_width"].tolist() == [0.25] * 20
    assert frame["set_size"].tolist() == [1] * 20
    assert frame["label"].tolist() == ["a"] * 20
    assert frame["confidence_level"].tolist() == [0.9] * 20
    assert frame["latency_s"].tolist() == [0.002] * 20
    # the latest label of (r1, 1) wins; (r1, 2) and r99 match no row of m
    assert frame["true_label"].tolist()[:6] == [None, None, "b", "b", None, None]
    assert frame["true_label"].notna().sum() == 2
    assert frame.attrs["feedback"] == {"matched": 2, "unmatched": 2}

    last = read_window(url, "m", last=3)
    assert last["request_id"].tolist() == ["r8", "r9", "r9"]
    assert last["instance"].tolist() == [1, 0, 1]
    assert last.attrs["feedback"] == {"matched": 0, "unmatched": 4}
    assert len(read_window(url, "m", last=20)) == 20 and len(read_window(url, "m", last=99)) == 20
    window = read_window(url, "m", since=2.0, until=4.0)  # since inclusive, until exclusive
    assert window["request_id"].tolist() == ["r2", "r2", "r3", "r3"]
    assert read_window(url, "m", since=9.0)["request_id"].tolist() == ["r9", "r9"]
    assert read_window(url, "m", until=0.5)["request_id"].tolist() == ["r0", "r0"]
    assert read_window(url, "m", since=4.5, until=5.0).empty
    version_2 = read_window(url, "m", version=2)
    assert version_2["request_id"].tolist() == [f"r{i // 2}" for i in range(10, 20)]
    assert read_window(url, "m", version=2, last=1)["request_id"].tolist() == ["r9"]
    assert read_window(url, "m", version=7).empty
    other = read_window(url, "other")
    assert other["request_id"].tolist() == ["r99"]
    assert other.attrs["feedback"] == {"matched": 0, "unmatched": 0}
    # without types: a version's own layout says x is numeric, c categorical
    inferred = read_window(url, "m")
    assert inferred["x"].dtype == np.float64 and inferred["c"].dtype == object
    with pytest.raises(ValueError, match="at least 1"):
        read_window(url, "m", last=0)


def test_missing_values_and_non_ascii_text_read_back(tmp_path: Path, log_url: str) -> None:
    url = log_url
    model = "modèle/ü"  # quoted in the Parquet path, plain text in PostgreSQL
    log = PredictionLog(url, spool_dir=tmp_path / "spool")
    log.start()
    missing = {"x": np.array([[np.nan]], dtype=np.float32), "c": np.array([[""]], dtype=object)}
    log.enqueue(dataclasses.replace(record(0, model=model), features=missing))
    text = {
        "x": np.array([[0.1]], dtype=np.float32),
        "c": np.array([['café ☕, "quoted"']], dtype=object),
    }
    at = 1_700_000_000.123456  # a real clock's time survives exactly
    log.enqueue(dataclasses.replace(record(1, model=model, at=at), features=text, request_id="é1"))
    log.stop()
    frame = read_window(url, model, feature_types=TYPES)
    assert frame["request_id"].tolist() == ["r0", "é1"]
    assert math.isnan(frame.loc[0, "x"]) and frame.loc[0, "c"] is None
    assert frame.loc[1, "x"] == float(np.float32(0.1))  # float32 kept as float32, not re-rounded
    assert frame.loc[1, "c"] == 'café ☕, "quoted"'
    assert frame.loc[1, "logged_at"] == at
    assert frame["model"].tolist() == [model, model]


def test_categories_with_line_breaks_read_back_past_one_csv_block(
    tmp_path: Path, log_url: str
) -> None:
    """A category holding a line break, in a window of more than 1 MiB of CSV.

    BUG (service/predlog/postgres_reader.py, ``_csv_table``): the PostgreSQL window comes back
    as CSV and is parsed by ``pyarrow.csv.read_csv`` without ``ParseOptions(
    newlines_in_values=True)``; Arrow then cuts the text into 1 MiB blocks at line breaks,
    splitting a quoted value across two blocks, and ``read_window`` fails with "CSV parse error:
    Expected 19 columns, got ...". The Parquet store passes; both PostgreSQL cases fail.
    """
    rows = 12_000
    log = PredictionLog(log_url, spool_dir=tmp_path / "spool", batch_rows=rows)
    log.start()
    log.enqueue(record(0, rows=rows, category="first line\nsecond line, with a comma"))
    log.stop()
    frame = read_window(log_url, "m", feature_types=TYPES)
    assert len(frame) == rows
    assert set(frame["c"]) == {"first line\nsecond line, with a comma"}


def test_read_window_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="off"):
        read_window("none", "m")
    with pytest.raises(ValueError, match="SQLite prediction log is retired"):
        read_window(f"sqlite:///{tmp_path}/p.sqlite", "m")
    with pytest.raises(ValueError, match="no prediction log at that URL") as error:
        read_window(str(tmp_path / "absent"), "m")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "absent").exists()  # reading creates nothing


def test_postgres_read_errors_are_one_line(pg: PostgresServer) -> None:
    """No database, and a database the server has not written yet: one line, no password
    (PostgreSQL's own SQL errors add LINE and caret lines, which must not reach the user)."""
    absent = f"postgresql://postgres:secret@127.0.0.1:{pg.port}/absent"
    cases = (
        (absent, "cannot connect to PostgreSQL at 127.0.0.1"),
        (fresh_database(pg), "cannot be read: .*predlog_"),
    )
    for url, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            read_window(url, "m")
        assert "\n" not in str(error.value) and "secret" not in str(error.value)


def test_a_model_without_rows_reads_as_an_empty_window(tmp_path: Path) -> None:
    log, root = parquet_log(tmp_path)
    log.start()
    log.enqueue(record(0, model="other"))
    log.stop()
    frame = read_window(str(root), "m", feature_types=TYPES)
    assert frame.empty
    assert list(frame.columns) == [*BASE_COLUMNS, "x", "c", "true_label"]
    assert frame.attrs["feedback"] == {"matched": 0, "unmatched": 0}


# -- queue ----------------------------------------------------------------------------------------


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    outcomes = Outcomes()
    log, root = parquet_log(tmp_path, queue_rows=5, on_rows=outcomes)
    # not started: nothing drains the queue, so it fills
    assert log.enqueue(record(0, rows=3))
    assert not log.enqueue(record(1, rows=3))  # 6 > 5 rows
    assert log.enqueue(record(2, rows=2))  # exactly 5
    assert not log.enqueue(record(3, rows=1))
    assert log.queue_rows() == 5
    # Accepted rows are counted as queued when the writer takes them, off the request path.
    assert outcomes.counts == {"dropped": 4}
    log.start()
    assert log.flush(10.0, seal=True)
    assert log.queue_rows() == 0
    assert outcomes.counts["queued"] == 5
    assert segment_rows(root) == 5
    assert log.enqueue(record(4))  # room again
    log.stop()
    assert segment_rows(root) == 6
    assert not log.enqueue(record(5))  # after stop: dropped, not raised
    assert outcomes.counts == {"queued": 6, "written": 6, "dropped": 5}


def test_enqueue_never_raises(tmp_path: Path) -> None:
    outcomes = Outcomes()
    log, _ = parquet_log(tmp_path, on_rows=outcomes)
    broken = dataclasses.replace(record(0), labels=None)  # type: ignore[arg-type]
    assert log.enqueue(broken) is False
    assert log.enqueue(None) is False  # type: ignore[arg-type]
    assert log.queue_rows() == 0 and not outcomes.counts


def test_unconvertible_record_is_counted_failed_and_the_writer_goes_on(tmp_path: Path) -> None:
    outcomes = Outcomes()
    log, root = parquet_log(tmp_path, on_rows=outcomes, flush_interval_s=0.2)
    log.start()
    log.enqueue(record(0))
    log.enqueue(dataclasses.replace(record(1, rows=2), labels=["a", "no-such-class"]))
    log.enqueue(dataclasses.replace(record(2), probabilities=np.zeros((1, 3))))  # wrong width
    log.enqueue(record(3, rows=2))
    log.stop()
    assert outcomes.counts == {"queued": 6, "failed": 3, "written": 3}
    frame = read_window(str(root), "m")
    assert frame["request_id"].tolist() == ["r0", "r3", "r3"]


def test_a_stream_is_written_in_gathered_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first record wakes the writer, which gathers for a flush interval: a stream of 30
    records over about 0.15 s (less than the 0.2 s interval) is written in one or two
    batches, without a flush() call, not one batch per record."""
    log, root = parquet_log(tmp_path, flush_interval_s=0.2)
    writes: list[int] = []
    store_write = log._store.write

    def counted_write(partition: Any, batch: pa.RecordBatch, batch_id: str) -> None:
        writes.append(batch.num_rows)
        store_write(partition, batch, batch_id)

    monkeypatch.setattr(log._store, "write", counted_write)
    log.start()
    try:
        for i in range(30):
            assert log.enqueue(record(i))
            time.sleep(0.005)
        deadline = time.monotonic() + 5.0
        while sum(writes) < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sum(writes) == 30
        assert writes[0] >= 20, writes  # gathered, not one write per record
    finally:
        log.stop()
    assert segment_rows(root) == 30


def test_one_flush_of_mixed_partitions_lands_each_record_in_its_own(tmp_path: Path) -> None:
    """Models, versions, UTC days and feedback mixed in one flush (queued before the writer
    starts): every partition holds exactly its records, in queue order."""
    log, root = parquet_log(tmp_path)
    queued = [
        record(0),
        record(1, version=2),
        record(2, at=DAY - 0.5),  # the last second of 1970-01-01
        record(3, at=DAY),  # the first of 1970-01-02
        record(4, model="other"),
        record(5),
    ]
    for item in queued:
        assert log.enqueue(item)
    assert log.enqueue(FeedbackRecord(7.0, "m", ["r0"], [0], ["a"]))
    log.start()
    log.stop()
    found = {
        str(path.relative_to(root).parent): pq.read_table(path).column("request_id").to_pylist()
        for path in segments(root)
    }
    assert found == {
        "model=m/version=1/date=1970-01-01": ["r0", "r2", "r5"],
        "model=m/version=1/date=1970-01-02": ["r3"],
        "model=m/version=2/date=1970-01-01": ["r1"],
        "model=other/version=1/date=1970-01-01": ["r4"],
    }
    assert read_window(str(root), "m").attrs["feedback"] == {"matched": 1, "unmatched": 0}


def test_a_flush_of_one_partition_spanning_midnight_is_split_by_day(tmp_path: Path) -> None:
    log, root = parquet_log(tmp_path)
    for i, at in enumerate((DAY - 1.0, DAY - 0.25, DAY, DAY + 3.0)):
        assert log.enqueue(record(i, at=at))
    log.start()
    log.stop()
    dates = sorted((path.parent.name, pq.read_table(path).num_rows) for path in segments(root))
    assert dates == [("date=1970-01-01", 2), ("date=1970-01-02", 2)]


def test_a_flush_of_predictions_only_is_split_by_model_and_version(tmp_path: Path) -> None:
    log, root = parquet_log(tmp_path)
    for item in (record(0), record(1, version=2), record(2, model="n"), record(3)):
        assert log.enqueue(item)
    log.start()
    log.stop()
    found = sorted(
        (str(p.parent.parent.relative_to(root)), pq.read_table(p).num_rows) for p in segments(root)
    )
    assert found == [("model=m/version=1", 2), ("model=m/version=2", 1), ("model=n/version=1", 1)]


def test_records_arriving_while_a_batch_is_stored_wait_for_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request served while the writer stores a batch joins the next gathered batch, a flush
    interval later, not a second batch of its own at once (each batch has a fixed cost)."""
    log, root = parquet_log(tmp_path, flush_interval_s=0.4)
    writes: list[tuple[float, int]] = []
    store_write = log._store.write

    def arriving_write(partition: Any, batch: pa.RecordBatch, batch_id: str) -> None:
        writes.append((time.monotonic(), batch.num_rows))
        if len(writes) == 1:
            for i in range(3):  # served while this batch is being written
                assert log.enqueue(record(100 + i))
        store_write(partition, batch, batch_id)

    monkeypatch.setattr(log._store, "write", arriving_write)
    log.start()
    try:
        assert log.enqueue(record(0, rows=2))
        deadline = time.monotonic() + 5.0
        while sum(rows for _, rows in writes) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [rows for _, rows in writes] == [2, 3]
        assert writes[1][0] - writes[0][0] >= 0.3, writes  # gathered for a flush interval
    finally:
        log.stop()
    assert segment_rows(root) == 5


# -- spools: dead and live processes, torn tails ------------------------------------------------


def test_dead_process_spool_is_sealed_once_and_a_torn_last_batch_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log, root = parquet_log(tmp_path)
    spool_dir = tmp_path / "spool"
    columns = columns_of(record(0))
    schema = schema_with_partition(columns, "m", 1, "1970-01-01")
    batches = [prediction_batch([record(i, rows=i + 1)], columns) for i in range(3)]
    dead = spool_dir / "segment-dead-000001.arrows"
    assert torn_spool(dead, batches, schema) == 3  # 1 + 2 rows; the 3 of r2 are torn
    backup = tmp_path / "backup.arrows"
    shutil.copy(dead, backup)

    log.start()
    log.stop()
    assert [p.name for p in segments(root)] == ["part-dead-000001.parquet"]
    assert segments(root)[0].parent == root / "model=m" / "version=1" / "date=1970-01-01"
    assert not dead.exists()
    assert "skipped a partly written batch" in caplog.text
    frame = read_window(str(root), "m")
    assert list(zip(frame["request_id"], frame["instance"], strict=True)) == [
        ("r0", 0), ("r1", 0), ("r1", 1),
    ]  # fmt: skip

    # A crash after the segment was moved into place but before the spool was removed: the
    # next start seals it again under the same name, replacing the segment, never adding one.
    shutil.copy(backup, dead)
    log, _ = parquet_log(tmp_path)
    log.start()
    log.stop()
    assert [p.name for p in segments(root)] == ["part-dead-000001.parquet"]
    assert segment_rows(root) == 3 and not dead.exists()
    # and a third start finds nothing left to seal
    log, _ = parquet_log(tmp_path)
    log.start()
    log.stop()
    assert segment_rows(root) == 3 and len(segments(root)) == 1


def test_a_spool_killed_before_its_schema_was_written_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A process killed between creating its spool and writing the stream's schema leaves an
    empty file: no rows to seal, so the next start removes it.

    BUG (minor; service/predlog/parquet_store.py, ``seal_orphans``, and writer.py, ``_replay``):
    ``read_spool`` raises ValueError ("has no readable schema") for the empty file, the orphan
    is released, and the file stays for ever: every later start logs "cannot seal spool" at
    ERROR again. The same holds for an empty ``pending-*`` spool.
    """
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    empty = spool_dir / "segment-dead-000001.arrows"
    empty.write_bytes(b"")
    log, root = parquet_log(tmp_path)
    log.start()
    log.enqueue(record(0))
    log.stop()
    assert segment_rows(root) == 1  # the log itself works
    assert "cannot seal spool" not in caplog.text
    assert not empty.exists()


def test_live_process_spool_is_left_alone(tmp_path: Path) -> None:
    """Another worker's spool (its lock held) is not sealed by this one; once that worker
    is gone, the next start seals it."""
    spool_dir = tmp_path / "spool"
    columns = columns_of(record(0))
    other = SpoolFile(
        spool_dir / "segment-live-000001.arrows",
        schema_with_partition(columns, "m", 1, "1970-01-01"),
    )
    other.append(prediction_batch([record(0, rows=2)], columns), "live-1")
    log, root = parquet_log(tmp_path)
    log.start()
    log.enqueue(record(1))
    log.stop()
    assert segment_rows(root) == 1  # its own row only
    assert other.path.exists()
    other.close()  # the worker exits without sealing (its lock is released)
    log, _ = parquet_log(tmp_path)
    log.start()
    log.stop()
    assert segment_rows(root) == 3 and not other.path.exists()


def test_a_newer_layout_is_refused_in_one_line(tmp_path: Path) -> None:
    log, root = parquet_log(tmp_path)
    log.start()
    log.enqueue(record(0))
    log.stop()
    (segment,) = segments(root)
    table = pq.read_table(segment)
    newer = dict(table.schema.metadata)
    newer[META_SCHEMA_VERSION] = b"3"
    pq.write_table(table.replace_schema_metadata(newer), segment)
    with pytest.raises(ValueError, match="layout version 3; this code knows up to 2") as error:
        read_window(str(root), "m")
    assert "\n" not in str(error.value)


def test_a_newer_layout_is_refused_in_any_segment_of_the_dataset(tmp_path: Path) -> None:
    """The newer segment is not the first file of the dataset (a later date).

    BUG (service/predlog/window.py, ``_parquet_parts``): only ``dataset.schema.metadata`` is
    checked, and pyarrow.dataset takes that schema from the first file it discovers; a segment
    written by a newer layout in any later file (here date=1970-01-03, or another writer's
    file in the same date) is read silently as if it had this layout.
    """
    log, root = parquet_log(tmp_path)
    log.start()
    log.enqueue(record(0))
    log.enqueue(record(1, at=2 * DAY + 5))
    log.stop()
    first, later = segments(root)
    assert "date=1970-01-01" in str(first) and "date=1970-01-03" in str(later)
    table = pq.read_table(later)
    newer = dict(table.schema.metadata)
    newer[META_SCHEMA_VERSION] = b"3"
    pq.write_table(table.replace_schema_metadata(newer), later)
    with pytest.raises(ValueError, match="layout version 3"):
        read_window(str(root), "m")


def test_a_newer_postgres_layout_is_refused_in_one_line(tmp_path: Path, pg: PostgresServer) -> None:
    url = fresh_database(pg)
    log = PredictionLog(url, spool_dir=tmp_path / "spool")
    log.start()
    log.enqueue(record(0))
    log.stop()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("UPDATE predlog_schema SET version = 99")
    log = PredictionLog(url, spool_dir=tmp_path / "spool")
    with pytest.raises(PredictionLogError, match="layout version 99") as error:
        log.start()
    assert "\n" not in str(error.value)


def test_a_newer_postgres_layout_is_refused_by_the_reader(
    tmp_path: Path, pg: PostgresServer
) -> None:
    """BUG (service/predlog/postgres_reader.py, ``postgres_parts``): the reader never looks at
    ``predlog_schema``; a database a newer probserve migrated is read as if it had this layout
    (the writer refuses it, see the test above, and the Parquet reader refuses a newer file)."""
    url = fresh_database(pg)
    log = PredictionLog(url, spool_dir=tmp_path / "spool")
    log.start()
    log.enqueue(record(0))
    log.stop()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("UPDATE predlog_schema SET version = 99")
    with pytest.raises(ValueError, match="layout version 99"):
        read_window(url, "m")


# -- segments, retention, several writers -----------------------------------------------------


def test_segments_are_sealed_by_rows(tmp_path: Path) -> None:
    log, root = parquet_log(tmp_path, segment_rows=5, segment_age_s=3600.0)
    log.start()
    for i in range(2):  # 2 + 2 rows: below 5, still spooled
        log.enqueue(record(i, rows=2))
        assert log.flush(10.0)
    assert segments(root) == [] and len(spools(tmp_path / "spool")) == 1
    log.enqueue(record(2, rows=1))  # 5 rows: sealed at the limit itself
    assert log.flush(10.0)
    assert segment_rows(root) == 5 and spools(tmp_path / "spool") == []
    log.enqueue(record(3, rows=7))  # a batch larger than a segment: one segment of 7
    assert log.flush(10.0)
    assert [pq.read_metadata(p).num_rows for p in segments(root)] == [5, 7]
    log.enqueue(record(4, rows=1))
    assert log.flush(10.0, seal=True)  # sealed on request
    assert sorted(pq.read_metadata(p).num_rows for p in segments(root)) == [1, 5, 7]
    log.stop()
    assert segment_rows(root) == 13


def test_segments_are_sealed_by_age(tmp_path: Path) -> None:
    age = 0.6
    log, root = parquet_log(tmp_path, segment_age_s=age)
    log.start()
    try:
        enqueued_at = time.monotonic()
        log.enqueue(record(0))
        assert log.flush(10.0)
        assert segments(root) == []  # younger than the segment age
        deadline = enqueued_at + 10.0
        while not segments(root) and time.monotonic() < deadline:
            time.sleep(0.02)
        sealed_after = time.monotonic() - enqueued_at
        assert segment_rows(root) == 1
        # not before its age; within the age plus the idle writer's tick and some slack
        assert age <= sealed_after < age + 2.0
        assert spools(tmp_path / "spool") == []
    finally:
        log.stop()


def test_retention_removes_old_date_partitions(tmp_path: Path) -> None:
    now = time.time()
    cutoff_day = math.floor((now - 2 * DAY) / DAY) * DAY  # start of the cutoff's UTC day
    log, root = parquet_log(tmp_path)
    log.start()
    log.enqueue(record(0, at=cutoff_day - 1))  # the day before the cutoff's: removed
    log.enqueue(record(1, at=cutoff_day + 1))  # older than the cutoff, same day: kept
    log.enqueue(record(2, at=now - 60))
    log.enqueue(FeedbackRecord(cutoff_day - 1, "m", ["r0"], [0], ["a"]))  # removed
    log.enqueue(FeedbackRecord(now - 60, "m", ["r1"], [0], ["b"]))
    log.stop()
    assert len(segments(root)) == 3
    log, _ = parquet_log(tmp_path, retention_days=2)
    log.start()
    log.stop()
    frame = read_window(str(root), "m")
    assert frame["request_id"].tolist() == ["r1", "r2"]
    assert frame["true_label"].tolist() == ["b", None]
    assert frame.attrs["feedback"] == {"matched": 1, "unmatched": 0}
    utc = [dt.datetime.fromtimestamp(t, dt.UTC).date().isoformat() for t in (cutoff_day, now)]
    assert {p.name for p in root.rglob("date=*")} == {f"date={d}" for d in utc}


def test_postgres_retention_deletes_old_predictions_and_feedback(
    tmp_path: Path, pg: PostgresServer
) -> None:
    """PostgreSQL deletes by row: anything older than the cutoff goes, whatever its day."""
    url = fresh_database(pg)
    now = time.time()
    log = PredictionLog(url, spool_dir=tmp_path / "spool")
    log.start()
    log.enqueue(record(0, at=now - 2 * DAY - 60))  # just past the cutoff: deleted
    log.enqueue(record(1, at=now - 2 * DAY + 60))  # just inside it: kept
    log.enqueue(FeedbackRecord(now - 3 * DAY, "m", ["r1"], [0], ["a"]))  # deleted
    log.enqueue(FeedbackRecord(now - 60, "m", ["r0"], [0], ["b"]))  # kept, now unmatched
    log.stop()
    assert len(read_window(url, "m")) == 2
    log = PredictionLog(url, spool_dir=tmp_path / "spool", retention_days=2)
    log.start()
    log.stop()
    frame = read_window(url, "m")
    assert frame["request_id"].tolist() == ["r1"]
    assert frame["true_label"].tolist() == [None]
    assert frame.attrs["feedback"] == {"matched": 0, "unmatched": 1}


def test_two_writers_share_one_directory(tmp_path: Path) -> None:
    """Two logs (as two --workers processes would) write one dataset and one spool directory
    at once, sealing small segments as they go: every row lands, once."""
    logs = [
        PredictionLog(
            str(tmp_path / "log"), spool_dir=tmp_path / "spool", batch_rows=50, segment_rows=300
        )
        for _ in range(2)
    ]
    for log in logs:
        log.start()

    def stream(log: PredictionLog, offset: int) -> None:
        for i in range(500):
            assert log.enqueue(record(offset + i, rows=2))

    threads = [threading.Thread(target=stream, args=(log, k * 1000)) for k, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.stop()
    root = tmp_path / "log"
    assert segment_rows(root) == 2000
    # sealed at 300 to 348 rows (batches of up to 50): at least 3 segments each, none shared
    writers = Counter(p.name.split("-")[1] for p in segments(root))  # part-<token>-<n>
    assert len(writers) == 2 and min(writers.values()) >= 3
    frame = read_window(str(root), "m")
    keys = set(zip(frame["request_id"], frame["instance"], strict=True))
    expected = {(f"r{k * 1000 + i}", j) for k in range(2) for i in range(500) for j in range(2)}
    assert len(frame) == 2000 and keys == expected
    assert spools(tmp_path / "spool") == []


def test_spool_batches_carry_their_ids(tmp_path: Path) -> None:
    """Each appended batch is one IPC message with its batch id, readable before close."""
    columns = columns_of(record(0))
    path = tmp_path / "segment-x-000001.arrows"
    spool = SpoolFile(path, schema_with_partition(columns, "m", 1, "1970-01-01"))
    spool.append(prediction_batch([record(0, rows=2)], columns), "x-1")
    spool.append(prediction_batch([record(1)], columns), "x-2")
    assert spool.rows == 3
    with path.open("rb") as handle:  # fsync'd: complete without the end-of-stream marker
        reader = ipc.open_stream(handle)
        ids = []
        while True:
            try:
                batch, meta = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            ids.append((meta[BATCH_ID].decode(), batch.num_rows))
    assert ids == [("x-1", 2), ("x-2", 1)]
    spool.close()  # the end-of-stream marker: the same batches
    schema, batches = read_spool(path)
    assert [(i, b.num_rows) for b, i in batches] == ids
    assert schema.metadata[b"probserve.kind"] == b"predictions"
