"""Prediction-log faults against real stores: PostgreSQL stopped mid-stream or down at start,
pending spools replayed (twice), SIGTERM and SIGKILL of a process writing a Parquet log.

PostgreSQL is a throwaway cluster (tests/pg_support.py); the signal tests run the log in a
child process, as the server runs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from service.predlog import FeedbackLabel, PredictionLog, PredictionRecord
from service.predlog.batches import columns_of, prediction_batch
from service.predlog.layout import file_metadata
from service.predlog.reader import read_window
from service.predlog.spool import read_spool
from tests.pg_support import PostgresServer, running_postgres
from tests.service.predlog_support import segment_rows, segments, spools, torn_spool

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """One cluster for the module (initdb costs seconds); each test gets its own database."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_url(pg: PostgresServer) -> Iterator[str]:
    """A fresh database; the cluster is running again afterwards whatever the test did."""
    if not pg.running():
        pg.start()
    yield pg.create_database(f"t_{uuid.uuid4().hex[:12]}")
    if not pg.running():
        pg.start()


def record(i: int, rows: int = 4) -> PredictionRecord:
    """Request ``r{i:05d}`` with ``rows`` instances, logged at ``1000 + i`` seconds."""
    p = np.tile([0.625, 0.375], (rows, 1))
    return PredictionRecord(
        logged_at=1000.0 + i,
        request_id=f"r{i:05d}",
        model="m",
        version=1,
        protocol="v2",
        classes=["a", "b"],
        features={"x": np.full((rows, 1), i, dtype=np.float32)},
        probabilities=p,
        lower=p - 0.0625,
        upper=p + 0.0625,
        prediction_sets=np.tile([True, False], (rows, 1)),
        labels=["a"] * rows,
        confidence_level=0.9,
        latency_s=0.001,
    )


def stored(url: str) -> tuple[int, int, list[int]]:
    """(rows, distinct (request_id, instance), the loaded batches' sequence numbers in the
    order they were loaded) of model m's table."""
    with psycopg.connect(url) as connection:
        found = connection.execute("SELECT table_name FROM predlog_tables WHERE model = 'm'")
        (table,) = found.fetchone() or ("",)
        counted = connection.execute(
            f"SELECT count(*), count(DISTINCT (c1, c2)) FROM {table}".encode()
        ).fetchone()
        assert counted is not None
        ids = connection.execute("SELECT batch_id FROM predlog_batches ORDER BY at").fetchall()
    # batch ids are <writer token>-<sequence number>
    return int(counted[0]), int(counted[1]), [int(b.rsplit("-", 1)[1]) for (b,) in ids]


def test_postgres_outage_mid_stream_loses_and_duplicates_nothing(
    pg: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    """N rows streamed; PostgreSQL is stopped (fast) after a third and started after two
    thirds. The middle third waits in pending spools and is replayed in order before the last
    third: exactly N rows, none twice, loaded in the order they were served."""
    requests, rows = 150, 4
    outcomes: Counter[str] = Counter()
    log = PredictionLog(
        pg_url,
        batch_rows=40,
        flush_interval_s=0.05,
        retry_interval_s=0.2,
        spool_dir=tmp_path / "spool",
        on_rows=lambda outcome, n: outcomes.update({outcome: n}),
    )
    log.start()
    for i in range(requests):
        if i == requests // 3:
            assert log.flush(30.0)
            pg.stop("fast")
        if i == 2 * requests // 3:
            assert log.flush(30.0)
            assert outcomes["spooled"] > 0  # the outage really reached the writer
            assert spools(tmp_path / "spool", "pending-")
            pg.start()
        assert log.enqueue(record(i, rows))
    log.stop(timeout_s=60.0)
    n = requests * rows
    total, distinct, batches = stored(pg_url)
    assert (total, distinct) == (n, n)
    assert batches == list(range(1, len(batches) + 1))  # every batch once, in serving order
    assert outcomes["written"] + outcomes["replayed"] == n
    assert outcomes["replayed"] == outcomes["spooled"] > 0
    assert outcomes["failed"] == 0 and outcomes["dropped"] == 0
    frame = read_window(pg_url, "m")
    assert frame["request_id"].tolist()[::rows] == [f"r{i:05d}" for i in range(requests)]
    assert len(frame) == n
    assert list(tmp_path.joinpath("spool").glob("*.arrows")) == []


def test_replaying_the_same_pending_spool_twice_adds_nothing(pg_url: str, tmp_path: Path) -> None:
    """A dead process's pending spool (a torn last batch) is replayed at the next start; the
    same file replayed again (a crash before it was removed) is skipped batch by batch."""
    spool_dir = tmp_path / "spool"
    columns = columns_of(record(0))
    schema = columns.schema().with_metadata(file_metadata("predictions", "m", 1, "1970-01-01"))
    batches = [prediction_batch([record(i, rows=i + 2)], columns) for i in range(3)]
    pending = spool_dir / "pending-dead-000001.arrows"
    assert torn_spool(pending, batches, schema) == 2 + 3  # r00002's 4 rows are torn
    backup = tmp_path / "backup.arrows"
    shutil.copy(pending, backup)
    outcomes: Counter[str] = Counter()

    def start_and_stop() -> None:
        log = PredictionLog(
            pg_url,
            spool_dir=spool_dir,
            on_rows=lambda outcome, n: outcomes.update({outcome: n}),
        )
        log.start()
        log.stop()

    start_and_stop()
    assert outcomes == {"replayed": 5} and not pending.exists()
    assert stored(pg_url) == (5, 5, [0, 1])  # the dead writer's ids: dead-0, dead-1
    shutil.copy(backup, pending)
    start_and_stop()
    assert not pending.exists()
    assert stored(pg_url) == (5, 5, [0, 1])  # nothing added
    frame = read_window(pg_url, "m")
    assert frame["request_id"].tolist() == ["r00000"] * 2 + ["r00001"] * 3
    assert frame["instance"].tolist() == [0, 1, 0, 1, 2]


def test_postgres_down_at_start_spools_then_catches_up(
    pg: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    """The server starts while PostgreSQL is down (compose start order): start() succeeds,
    rows spool, and the layout and rows arrive once PostgreSQL is up."""
    outcomes: Counter[str] = Counter()
    pg.stop("fast")
    log = PredictionLog(
        pg_url,
        flush_interval_s=0.05,
        retry_interval_s=0.2,
        spool_dir=tmp_path / "spool",
        on_rows=lambda outcome, n: outcomes.update({outcome: n}),
    )
    log.start()
    for i in range(10):
        assert log.enqueue(record(i, 1))
    assert log.flush(30.0)
    assert outcomes["spooled"] == 10 and outcomes["written"] == 0
    pg.start()
    log.enqueue(record(10, 1))
    log.stop(timeout_s=60.0)
    log2 = PredictionLog(pg_url, spool_dir=tmp_path / "spool")
    log2.start()
    counts = log2.record_feedback("m", [FeedbackLabel("r00003", 0, "b")], {"a", "b"})
    log2.stop()
    assert counts.accepted == 1
    frame = read_window(pg_url, "m")
    assert frame["request_id"].tolist() == [f"r{i:05d}" for i in range(11)]
    assert frame["true_label"].tolist()[3] == "b"
    assert frame.attrs["feedback"] == {"matched": 1, "unmatched": 0}
    # the 11th row is written, or spooled and replayed if the retry timer had not run out
    assert outcomes["replayed"] >= 10
    assert outcomes["replayed"] + outcomes["written"] == 11
    assert stored(pg_url)[:2] == (11, 11)
    assert list(tmp_path.joinpath("spool").glob("*.arrows")) == []


CHILD = textwrap.dedent(
    """
    import signal, sys, time
    sys.path.insert(0, sys.argv[1])
    from service.predlog import PredictionLog
    from tests.service.test_predlog_faults import record

    mode, url, spool = sys.argv[2], sys.argv[3], sys.argv[4]
    flush_interval = float(sys.argv[5])
    log = PredictionLog(url, spool_dir=spool, flush_interval_s=flush_interval,
                        batch_rows=1_000_000, segment_rows=1000)
    log.start()

    def on_term(signum, frame):  # what the server's lifespan does on SIGTERM
        log.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    if mode == "burst":
        for i in range(2000):
            log.enqueue(record(i, 1))
        print("enqueued 2000", flush=True)
        time.sleep(120)
    else:  # stream: about a row per millisecond, reporting the count with a timestamp
        i = 0
        while True:
            for _ in range(10):
                log.enqueue(record(i, 1))
                i += 1
            print(f"{time.time()} {i}", flush=True)
            time.sleep(0.01)
    """
)


def _child(tmp_path: Path, mode: str, flush_interval_s: float) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.Popen(
        [sys.executable, str(script), str(ROOT), mode, str(tmp_path / "log"),
         str(tmp_path / "spool"), str(flush_interval_s)],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip


def test_sigterm_drains_the_queue(tmp_path: Path) -> None:
    """2000 rows wait in the queue (the writer would not wake for 60 s); SIGTERM: all 2000
    are in sealed segments when the process has exited, and no spool is left."""
    child = _child(tmp_path, "burst", 60.0)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "enqueued 2000"
    child.send_signal(signal.SIGTERM)
    assert child.wait(60) == 0
    assert segment_rows(tmp_path / "log") == 2000
    assert spools(tmp_path / "spool") == []
    frame = read_window(str(tmp_path / "log"), "m")
    assert frame["request_id"].tolist() == [f"r{i:05d}" for i in range(2000)]


def test_sigkill_loses_at_most_one_flush_interval(tmp_path: Path) -> None:
    """A stream of about 1000 rows/s with a 0.2 s flush interval (segments of 1000 rows) is
    SIGKILLed. What survives is the sealed segments plus the complete batches of the orphaned
    spool, which the next start seals: a prefix of the stream, each row once. What is lost is
    what arrived since the writer's last append (and a torn one): the bound asserted is the rows
    enqueued in the last flush_interval + 0.5 s before the kill (0.5 s: one append and fsync on
    a loaded machine)."""
    flush_interval = 0.2
    child = _child(tmp_path, "stream", flush_interval)
    assert child.stdout is not None
    reports: list[tuple[float, int]] = []
    while not reports or reports[-1][1] < 3000:
        stamp, total = child.stdout.readline().split()
        reports.append((float(stamp), int(total)))
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    root, spool_dir = tmp_path / "log", tmp_path / "spool"
    killed_at, enqueued = reports[-1]
    sealed = segment_rows(root)
    assert sealed >= 1000  # segments were sealed before the kill
    names = {p.name for p in segments(root)}
    in_spools = 0
    for path in spools(spool_dir):
        # a spool whose segment was moved into place just before the kill is sealed again
        # under the same name: its rows are already counted
        if f"part-{path.name.removeprefix('segment-').removesuffix('.arrows')}.parquet" in names:
            continue
        in_spools += sum(batch.num_rows for batch, _ in read_spool(path)[1])
    survived = sealed + in_spools

    log = PredictionLog(str(root), spool_dir=spool_dir)  # the next start seals the orphan
    log.start()
    log.stop()
    assert spools(spool_dir) == []
    assert segment_rows(root) == survived
    frame = read_window(str(root), "m")
    assert frame["request_id"].tolist() == [f"r{i:05d}" for i in range(survived)]

    # the child may enqueue one more group of 10 after its last report
    enqueued_before_window = max(
        (n for t, n in reports if t <= killed_at - flush_interval - 0.5), default=0
    )
    lost = enqueued - survived
    print(f"SIGKILL: enqueued {enqueued} (+<=10), survived {survived} ({in_spools} in the spool)")
    assert survived <= enqueued + 10
    assert survived >= enqueued_before_window
    assert lost <= enqueued - enqueued_before_window
