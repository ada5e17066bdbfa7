"""The prediction log against real SQLite files: rows, reader, feedback, queue, spool, retention.

The write-read round trips also run against a real PostgreSQL, in a UTF-8 database and in a
SQL_ASCII one (what a cluster made without a locale has), through the same reader.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from service.bundle.manifest import REFERENCE_PROBABILITY_PREFIX as P
from service.predlog import (
    FeedbackCounts,
    FeedbackLabel,
    PredictionLog,
    PredictionLogError,
    PredictionRecord,
    parse_log_url,
    sqlite_store,
)
from service.predlog.reader import read_window
from service.predlog.record import record_rows, records_rows
from service.predlog.schema import COLUMN_NAMES, create_sqlite, insert_sql
from service.predlog.spool import Spool
from service.predlog.urls import LogLocation
from tests.pg_support import PostgresServer, running_postgres


def record(
    i: int, rows: int = 1, *, model: str = "m", version: int = 1, at: float | None = None
) -> PredictionRecord:
    """``rows`` instances of a two-class model; request ``r{i}`` logged at ``i`` seconds."""
    x = np.arange(rows, dtype=np.float32).reshape(rows, 1) + np.float32(0.1)
    p = np.tile([0.7, 0.3], (rows, 1))
    return PredictionRecord(
        logged_at=float(i) if at is None else at,
        request_id=f"r{i}",
        model=model,
        version=version,
        protocol="v1",
        classes=["a", "b"],
        features={"x": x, "c": np.full((rows, 1), "u", dtype=object)},
        probabilities=p,
        lower=p - 0.1,
        upper=p + 0.1,
        prediction_sets=np.tile([True, False], (rows, 1)),
        labels=["a"] * rows,
        confidence_level=0.9,
        latency_s=0.002,
    )


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """One cluster for the module (initdb costs seconds); each test gets its own database."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-sql-ascii"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty prediction log in each store the reader serves."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/p.sqlite"
    pg: PostgresServer = request.getfixturevalue("pg")
    encoding = "SQL_ASCII" if request.param.endswith("ascii") else None
    return pg.create_database(request.node.name.lower(), encoding)


class Outcomes:
    """``on_rows`` that counts outcomes (thread-safe)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, outcome: str, rows: int) -> None:
        with self._lock:
            self.counts[outcome] += rows


def count(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM predictions").fetchone()[0])


# -- URLs -----------------------------------------------------------------------------------------


def test_urls() -> None:
    assert parse_log_url("none") is None
    assert parse_log_url("sqlite:///./p.sqlite") == LogLocation("sqlite", Path("./p.sqlite"), None)
    assert parse_log_url("sqlite:////abs/p.sqlite") == LogLocation(
        "sqlite", Path("/abs/p.sqlite"), None
    )
    pg = LogLocation("postgresql", None, "postgresql://u:pw@h:5432/db")
    assert parse_log_url("postgres://u:pw@h:5432/db") == pg
    assert parse_log_url("postgresql://u:pw@h:5432/db") == pg
    for bad in ("mysql://h/db", "predictions.sqlite", "sqlite:///"):
        with pytest.raises(ValueError, match="postgresql://user:password@host"):
            parse_log_url(bad)


def test_bad_urls_fail_at_construction_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(PredictionLogError, match="unsupported prediction-log URL") as bad:
        PredictionLog("mysql://u:secret@h/db", spool_dir=tmp_path)
    assert "secret" not in str(bad.value) and "\n" not in str(bad.value)
    with pytest.raises(PredictionLogError, match="malformed") as malformed:
        PredictionLog("postgresql://u:secret@h:notaport/db", spool_dir=tmp_path)
    assert "secret" not in str(malformed.value)
    with pytest.raises(PredictionLogError, match="malformed"):
        PredictionLog("postgresql://u:secret@h/db?nonsense=1", spool_dir=tmp_path)
    log = PredictionLog(f"sqlite:///{tmp_path}/missing/dir/p.sqlite", spool_dir=tmp_path)
    with pytest.raises(PredictionLogError, match="directory does not exist"):
        log.start()


# -- rows -----------------------------------------------------------------------------------------


def test_record_rows_hand_computed() -> None:
    rec = PredictionRecord(
        logged_at=12.5,
        request_id="req",
        model="m",
        version=3,
        protocol="v2",
        classes=["a", "b", "c"],
        features={
            "x": np.array([[0.1], [np.nan]], dtype=np.float32),
            "c": np.array([["u"], [""]], dtype=object),
        },
        probabilities=np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]),
        lower=np.array([[0.4, 0.2, 0.1], [0.0, 0.1, 0.5]]),
        upper=np.array([[0.75, 0.4, 0.3], [0.2, 0.3, 0.875]]),
        prediction_sets=np.array([[True, True, False], [False, False, True]]),
        labels=["a", "c"],
        confidence_level=0.95,
        latency_s=0.25,
    )
    assert rec.rows == 2
    first, second = record_rows(rec, "tok", 7)
    row: dict[str, Any] = dict(zip(COLUMN_NAMES, first, strict=True))
    assert row["row_key"] == "tok-7" and second[0] == "tok-8"
    assert (row["request_id"], row["instance"], second[3]) == ("req", 0, 1)
    # float32 0.1 keeps its shortest text; NaN and "" are missing (null)
    assert json.loads(row["features"]) == {"x": 0.1, "c": "u"}
    assert json.loads(second[7]) == {"x": None, "c": None}
    assert json.loads(row["probabilities"]) == {"a": 0.5, "b": 0.3, "c": 0.2}
    assert json.loads(row["prediction_set"]) == ["a", "b"]
    assert json.loads(second[11]) == ["c"]
    # width of the predicted class: a: 0.75 - 0.4; c: 0.875 - 0.5
    assert row["interval_width"] == pytest.approx(0.35)
    assert second[14] == pytest.approx(0.375)
    assert (row["set_size"], second[15]) == (2, 1)
    assert (row["label"], second[12]) == ("a", "c")
    assert (row["version"], row["protocol"], row["latency_s"]) == (3, "v2", 0.25)


# -- write, read, feedback ------------------------------------------------------------------------


def test_round_trip_window_and_feedback(tmp_path: Path, log_url: str) -> None:
    url = log_url
    outcomes = Outcomes()
    log = PredictionLog(url, spool_dir=tmp_path / "spool", on_rows=outcomes)
    log.start()
    for i in range(10):
        assert log.enqueue(record(i, rows=2, version=1 if i < 5 else 2))
    log.enqueue(record(99, model="other"))
    counts = log.record_feedback(
        "m",
        [
            FeedbackLabel("r1", 0, "b"),
            FeedbackLabel("r1", 1, "a"),
            FeedbackLabel("r1", 1, "b"),  # a later label replaces an earlier one
            FeedbackLabel("r1", 2, "a"),  # no instance 2
            FeedbackLabel("r99", 0, "a"),  # another model's prediction
            FeedbackLabel("r2", 0, "zebra"),  # not a class
        ],
        {"a", "b"},
    )
    assert counts == FeedbackCounts(accepted=3, unknown=2, invalid=1)
    log.stop()
    assert outcomes.counts == {"queued": 21, "written": 21}

    frame = read_window(url, "m", feature_types={"x": "numeric", "c": "categorical"})
    assert len(frame) == 20
    assert list(frame.columns[:11]) == [
        "logged_at", "request_id", "instance", "model", "version", "protocol",
        "confidence_level", "label", "interval_width", "set_size", "latency_s",
    ]  # fmt: skip
    assert list(frame.columns[11:]) == ["x", "c", f"{P}a", f"{P}b", "true_label"]
    assert frame["x"].dtype == np.float64 and frame["c"].dtype == object
    assert frame["x"].tolist()[:2] == [pytest.approx(0.1), pytest.approx(1.1)]
    assert frame[f"{P}a"].tolist() == [0.7] * 20
    assert frame["interval_width"].tolist() == [pytest.approx(0.2)] * 20
    assert frame["true_label"].tolist()[:6] == [None, None, "b", "b", None, None]
    assert frame["logged_at"].is_monotonic_increasing

    last = read_window(url, "m", last=3)
    assert last["request_id"].tolist() == ["r8", "r9", "r9"]
    assert last["instance"].tolist() == [1, 0, 1]
    window = read_window(url, "m", since=2.0, until=4.0)
    assert window["request_id"].tolist() == ["r2", "r2", "r3", "r3"]
    assert set(read_window(url, "m", version=2)["request_id"]) == {f"r{i}" for i in range(5, 10)}
    assert read_window(url, "other")["request_id"].tolist() == ["r99"]
    # without types: numbers-only features are numeric, others categorical
    inferred = read_window(url, "m")
    assert inferred["x"].dtype == np.float64 and inferred["c"].dtype == object


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_read_window_errors_are_one_line(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """No log database, and a database the server has not written yet: one line, no password
    (PostgreSQL's own SQL errors add LINE and caret lines, which must not reach the user)."""
    with pytest.raises(ValueError, match="off"):
        read_window("none", "m")
    if store == "sqlite":
        absent = f"sqlite:///{tmp_path}/absent.sqlite"
        empty_file = tmp_path / "empty.sqlite"
        sqlite3.connect(empty_file).close()
        empty, no_database = f"sqlite:///{empty_file}", "no prediction log database"
    else:
        pg: PostgresServer = request.getfixturevalue("pg")
        absent = f"postgresql://postgres:secret@127.0.0.1:{pg.port}/absent"
        empty = pg.create_database(request.node.name.lower())
        no_database = "cannot connect to PostgreSQL at 127.0.0.1"
    for url, message in ((absent, no_database), (empty, "cannot be read: .*predictions")):
        with pytest.raises(ValueError, match=message) as error:
            read_window(url, "m")
        assert "\n" not in str(error.value) and "secret" not in str(error.value)
    assert not (tmp_path / "absent.sqlite").exists()  # reading creates nothing


def test_missing_values_and_non_ascii_text_read_back(tmp_path: Path, log_url: str) -> None:
    url = log_url
    log = PredictionLog(url, spool_dir=tmp_path / "spool")
    log.start()
    rec = record(0)
    features = {"x": np.array([[np.nan]], dtype=np.float32), "c": np.array([[""]], dtype=object)}
    log.enqueue(dataclasses.replace(rec, features=features))
    accented = {
        "x": np.array([[1.5]], dtype=np.float32),
        "c": np.array([["café ☕"]], dtype=object),
    }
    log.enqueue(dataclasses.replace(record(1), features=accented))
    log.stop()
    frame = read_window(url, "m", feature_types={"x": "numeric", "c": "categorical"})
    assert np.isnan(frame.loc[0, "x"]) and frame.loc[0, "c"] is None
    assert frame.loc[1, "x"] == 1.5 and frame.loc[1, "c"] == "café ☕"


# -- queue ----------------------------------------------------------------------------------------


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    outcomes = Outcomes()
    log = PredictionLog(
        f"sqlite:///{tmp_path}/p.sqlite", queue_rows=5, spool_dir=tmp_path, on_rows=outcomes
    )
    # not started: nothing drains the queue, so it fills
    assert log.enqueue(record(0, rows=3))
    assert not log.enqueue(record(1, rows=3))  # 6 > 5 rows
    assert log.enqueue(record(2, rows=2))  # exactly 5
    assert not log.enqueue(record(3, rows=1))
    assert log.queue_rows() == 5
    assert outcomes.counts == {"queued": 5, "dropped": 4}
    log.start()
    log.flush(10.0)
    assert log.queue_rows() == 0
    log.stop()
    assert count(tmp_path / "p.sqlite") == 5
    assert not log.enqueue(record(4))  # after stop: dropped, not raised
    assert outcomes.counts["dropped"] == 5


def test_enqueue_never_raises(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path}/p.sqlite", spool_dir=tmp_path)
    broken = dataclasses.replace(record(0), labels=None)  # type: ignore[arg-type]
    assert log.enqueue(broken) is False


def test_unconvertible_record_is_counted_failed_and_the_writer_goes_on(tmp_path: Path) -> None:
    outcomes = Outcomes()
    log = PredictionLog(f"sqlite:///{tmp_path}/p.sqlite", spool_dir=tmp_path, on_rows=outcomes)
    log.start()
    log.enqueue(dataclasses.replace(record(0), labels=["no-such-class"]))
    log.enqueue(record(1))
    log.stop()
    assert outcomes.counts == {"queued": 2, "failed": 1, "written": 1}
    assert count(tmp_path / "p.sqlite") == 1


# -- faults: a locked database, the spool, replay ------------------------------------------------


def test_locked_database_spools_then_replays_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the write lock past the busy timeout: rows go to the spool, and
    once the lock is gone they are replayed before newer rows, each exactly once."""
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.05)
    path = tmp_path / "p.sqlite"
    outcomes = Outcomes()
    log = PredictionLog(
        f"sqlite:///{path}", spool_dir=tmp_path / "spool", retry_interval_s=0.0, on_rows=outcomes
    )
    log.start()
    for i in range(5):
        log.enqueue(record(i))
    log.flush(10.0)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    for i in range(5, 15):
        log.enqueue(record(i))
        log.flush(10.0)
    spool_files = list((tmp_path / "spool").glob("spool-*.jsonl"))
    assert len(spool_files) == 1
    assert len(spool_files[0].read_bytes().splitlines()) == 10
    assert outcomes.counts["spooled"] == 10
    blocker.execute("ROLLBACK")
    blocker.close()
    for i in range(15, 20):
        log.enqueue(record(i))
    log.stop()
    assert outcomes.counts["replayed"] == 10
    assert outcomes.counts["written"] + outcomes.counts["replayed"] == 20
    with sqlite3.connect(path) as connection:
        ids = [r for (r,) in connection.execute("SELECT request_id FROM predictions ORDER BY id")]
    assert ids == [f"r{i}" for i in range(20)]
    assert not list((tmp_path / "spool").glob("*.jsonl"))  # emptied and removed at stop


def test_dead_process_spool_is_replayed_once_even_if_partly_written(tmp_path: Path) -> None:
    """A spool left by a dead process (its lock free) is replayed at start; rows that reached
    the database before the crash are skipped by row_key; a torn last line is skipped."""
    path = tmp_path / "p.sqlite"
    connection = sqlite3.connect(path)
    create_sqlite(connection)
    rows = record_rows(record(0, rows=6), "dead", 0)
    with connection:
        connection.executemany(insert_sql("sqlite"), rows[:2])  # inserted before the crash
    connection.close()
    spool = tmp_path / "spool"
    spool.mkdir()
    torn = orjson.dumps(rows[5])[:20]
    (spool / "spool-dead.jsonl").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in rows[:5]) + torn
    )
    outcomes = Outcomes()
    log = PredictionLog(f"sqlite:///{path}", spool_dir=spool, on_rows=outcomes)
    log.start()
    log.stop()
    with sqlite3.connect(path) as connection:
        keys = [k for (k,) in connection.execute("SELECT row_key FROM predictions ORDER BY id")]
    assert keys == [f"dead-{i}" for i in range(5)]
    assert outcomes.counts["replayed"] == 5
    assert not (spool / "spool-dead.jsonl").exists()


def test_live_process_spool_is_left_alone(tmp_path: Path) -> None:
    """Another worker's spool (its lock held) is not replayed by this one."""
    path = tmp_path / "p.sqlite"
    spool = tmp_path / "spool"
    other = Spool(spool, "live")
    other.append(record_rows(record(0), "live", 0))  # holds the lock while the worker lives
    log = PredictionLog(f"sqlite:///{path}", spool_dir=spool)
    log.start()
    log.stop()
    assert count(path) == 0
    assert other.path.exists()
    other.close()


# -- schema, retention, several writers ------------------------------------------------------


def test_schema_is_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    connection = sqlite3.connect(path)
    assert create_sqlite(connection) == 0  # created
    assert create_sqlite(connection) == 1  # already at version 1: nothing to do
    tables = {r for (r,) in connection.execute("SELECT name FROM sqlite_master")}
    assert {"predictions", "feedback", "schema_version"} <= tables
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    with connection:
        connection.execute("UPDATE schema_version SET version = 99")
    connection.close()
    log = PredictionLog(f"sqlite:///{path}", spool_dir=tmp_path)
    with pytest.raises(PredictionLogError, match="layout version 99"):
        log.start()


def test_wal_mode(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path}/p.sqlite", spool_dir=tmp_path)
    log.start()
    log.stop()
    with sqlite3.connect(tmp_path / "p.sqlite") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA page_size").fetchone()[0] == sqlite_store.PAGE_SIZE


def test_an_existing_log_file_keeps_its_page_size(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    with sqlite3.connect(path) as connection:  # written by an older server: 4 KiB pages
        connection.execute("PRAGMA journal_mode=WAL")
        create_sqlite(connection)
        connection.execute(insert_sql("sqlite"), record_rows(record(1), "old", 0)[0])
    log = PredictionLog(f"sqlite:///{path}", spool_dir=tmp_path / "spool")
    log.start()
    log.enqueue(record(2))
    log.stop()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert count(path) == 2


def test_retention_deletes_old_predictions_and_feedback(tmp_path: Path) -> None:
    import time

    path = tmp_path / "p.sqlite"
    now = time.time()
    log = PredictionLog(f"sqlite:///{path}", spool_dir=tmp_path)
    log.start()
    log.enqueue(record(0, at=now - 3 * 86400))
    log.enqueue(record(1, at=now - 60))
    assert log.record_feedback("m", [FeedbackLabel("r0", 0, "a")], {"a", "b"}).accepted == 1
    log.stop()
    with sqlite3.connect(path) as connection, connection:
        connection.execute("UPDATE feedback SET received_at = ?", (now - 3 * 86400,))
    log = PredictionLog(f"sqlite:///{path}", spool_dir=tmp_path, retention_days=2)
    log.start()
    log.flush(10.0)
    log.stop()
    with sqlite3.connect(path) as connection:
        ids = [r for (r,) in connection.execute("SELECT request_id FROM predictions")]
        feedback = connection.execute("SELECT count(*) FROM feedback").fetchone()[0]
    assert ids == ["r1"] and feedback == 0


def test_two_writers_share_one_file(tmp_path: Path) -> None:
    """Two logs (as two --workers processes would) write one WAL file concurrently."""
    url = f"sqlite:///{tmp_path}/p.sqlite"
    logs = [PredictionLog(url, spool_dir=tmp_path / "spool", batch_rows=50) for _ in range(2)]
    for log in logs:
        log.start()

    def stream(log: PredictionLog, offset: int) -> None:
        for i in range(500):
            log.enqueue(record(offset + i, rows=2))

    threads = [threading.Thread(target=stream, args=(log, k * 1000)) for k, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.stop()
    assert count(tmp_path / "p.sqlite") == 2000


def test_grouped_conversion_equals_one_record_at_a_time() -> None:
    # The writer converts consecutive records of one model version as one block; every field
    # that belongs to a request (time, id, instance, protocol, level, latency) must survive.

    def record(k: int, rows: int, model: str = "m") -> PredictionRecord:
        p = np.tile([[0.25, 0.75]], (rows, 1))
        return PredictionRecord(
            logged_at=1000.0 + k,
            request_id=f"r{k}",
            model=model,
            version=1,
            protocol="v1" if k % 2 else "v2",
            classes=["a", "b"],
            features={
                "x": np.full((rows, 1), 0.1 * k, dtype=np.float32),
                "c": np.array([["red"]] * rows, dtype=object),
            },
            probabilities=p,
            lower=p - 0.1,
            upper=p + 0.1 * k,
            prediction_sets=np.tile([[k % 2 == 0, True]], (rows, 1)),
            labels=["b"] * rows,
            confidence_level=0.9 if k % 3 else 0.95,
            latency_s=0.001 * k,
        )

    records = [record(0, 1), record(1, 3), record(2, 1, model="other"), record(3, 2)]
    one_by_one = []
    seq = 7
    for r in records:
        one_by_one += record_rows(r, "key", seq)
        seq += r.rows
    assert records_rows(records, "key", 7) == one_by_one
    assert [row[2:4] for row in one_by_one[:4]] == [("r0", 0), ("r1", 0), ("r1", 1), ("r1", 2)]


def test_json_objects_escape_keys_and_keep_float32_text() -> None:
    from service.predlog.record import _json_objects

    keys = ['a"b', "{x}", "é", "{}", "back\\slash"]
    block = np.array([[0.1, np.nan, 1e-7, -2.5, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0]], np.float32)
    first, second = _json_objects(keys, block)
    # Written by hand: orjson's float32 text, null for NaN, keys JSON-escaped, braces literal.
    assert first == '{"a\\"b":0.1,"{x}":null,"é":1e-7,"{}":-2.5,"back\\\\slash":3.0}'
    assert json.loads(second) == {'a"b': 1.0, "{x}": 2.0, "é": 3.0, "{}": 4.0, "back\\slash": 5.0}
    assert _json_objects(keys, np.zeros((0, 5), np.float32)) == []
    assert _json_objects(["p"], np.array([[0.25], [0.5]])) == ['{"p":0.25}', '{"p":0.5}']


def test_numeric_block_and_per_feature_columns_give_the_same_rows() -> None:
    # The native codec hands the log its numeric block; V2 requests come as columns only.
    rng = np.random.default_rng(3)
    n = 5
    x = rng.normal(size=(n, 1)).astype(np.float32)
    y = rng.normal(size=(n, 1)).astype(np.float32)
    y[2, 0] = np.nan
    p = np.tile([[0.4, 0.6]], (n, 1))

    def record(block: bool, categorical: bool) -> PredictionRecord:
        features: dict[str, Any] = {"x": x, "y": y}
        if categorical:  # between the numeric ones, as graph order may put it
            features = {"x": x, "c": np.array([["k"]] * n, dtype=object), "y": y}
        numeric = (("x", "y"), np.ascontiguousarray(np.hstack([x, y]).T)) if block else None
        return PredictionRecord(
            logged_at=1.0, request_id="r", model="m", version=1, protocol="v1",
            classes=["a", "b"], features=features, probabilities=p, lower=p - 0.1,
            upper=p + 0.1, prediction_sets=np.ones((n, 2), bool), labels=["b"] * n,
            confidence_level=0.9, latency_s=0.01, numeric=numeric,
        )  # fmt: skip

    for categorical in (False, True):
        with_block = records_rows([record(True, categorical)] * 2, "k", 0)
        without = records_rows([record(False, categorical)] * 2, "k", 0)
        assert with_block == without
        features = json.loads(with_block[2][7])
        assert list(features) == (["x", "c", "y"] if categorical else ["x", "y"])
        assert features["y"] is None and features["x"] == pytest.approx(float(x[2, 0]))


def test_writer_converts_in_slices_with_the_keys_of_one_conversion(tmp_path: Path) -> None:
    from service.predlog.writer import CONVERT_SLICE_ROWS

    log = PredictionLog(f"sqlite:///{tmp_path}/p.sqlite", spool_dir=tmp_path / "spool")
    # Many 1-row records (several slices), one record bigger than a slice (a slice of its own),
    # another model in between (a new group inside a slice), then 2-row records.
    records = [record(i) for i in range(CONVERT_SLICE_ROWS + 5)]
    records += [record(900, rows=CONVERT_SLICE_ROWS + 3), record(901, model="other")]
    records += [record(1000 + i, rows=2) for i in range(70)]
    rows = log._convert(records)
    assert rows == records_rows(records, log._token, 0)
    total = sum(r.rows for r in records)
    assert [r[0] for r in rows] == [f"{log._token}-{i}" for i in range(total)]
    more = log._convert([record(5000)])
    assert more[0][0] == f"{log._token}-{total}"  # keys go on where the last batch stopped


def test_an_idle_writer_sleeps_and_a_stream_is_written_in_gathered_batches(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.sqlite"
    log = PredictionLog(f"sqlite:///{path}", spool_dir=tmp_path / "spool", flush_interval_s=0.2)
    inserts: list[int] = []
    store_insert = log._store.insert

    def counted_insert(rows: Any) -> None:
        inserts.append(len(rows))
        store_insert(rows)

    log._store.insert = counted_insert  # type: ignore[method-assign]
    drains = 0
    drain = log._drain

    def counted_drain() -> None:
        nonlocal drains
        drains += 1
        drain()

    log._drain = counted_drain  # type: ignore[method-assign]
    log.start()
    try:
        threading.Event().wait(0.5)  # idle: at most the start-up pass, no wake-up per interval
        idle_drains = drains
        assert idle_drains <= 1
        # A stream of 30 records, one every 5 ms (about 0.15 s, less than one flush interval):
        # the first wakes the writer, which gathers the rest and writes them in one insert.
        for i in range(30):
            assert log.enqueue(record(i))
            threading.Event().wait(0.005)
        deadline = threading.Event()
        for _ in range(100):  # written without a flush() call, well before 5 s
            if count(path) == 30:
                break
            deadline.wait(0.05)
        assert count(path) == 30
        assert inserts[0] >= 20, inserts  # gathered, not one insert per record
    finally:
        log.stop()
