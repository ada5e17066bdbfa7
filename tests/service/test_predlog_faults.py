"""Prediction-log faults against real databases: PostgreSQL stopped mid-stream, SIGTERM, SIGKILL.

PostgreSQL is a throwaway cluster (tests/pg_support.py); the signal tests run the log in a
child process, as the server runs it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from service.predlog import FeedbackLabel, PredictionLog, PredictionRecord
from service.predlog.reader import read_window
from tests.pg_support import PostgresServer, running_postgres

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """One cluster for the module (initdb costs seconds); each test gets its own database."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_url(pg: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database; the cluster is running again afterwards whatever the test did."""
    if not pg.running():
        pg.start()
    yield pg.create_database(request.node.name.lower())
    if not pg.running():
        pg.start()


def record(i: int, rows: int = 4) -> PredictionRecord:
    """Request ``r{i:05d}`` with ``rows`` instances, logged at ``1000 + i`` seconds."""
    p = np.tile([0.6, 0.4], (rows, 1))
    return PredictionRecord(
        logged_at=1000.0 + i,
        request_id=f"r{i:05d}",
        model="m",
        version=1,
        protocol="v2",
        classes=["a", "b"],
        features={"x": np.full((rows, 1), i, dtype=np.float32)},
        probabilities=p,
        lower=p - 0.05,
        upper=p + 0.05,
        prediction_sets=np.tile([True, False], (rows, 1)),
        labels=["a"] * rows,
        confidence_level=0.9,
        latency_s=0.001,
    )


def test_postgres_outage_mid_stream_loses_and_duplicates_nothing(
    pg: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    """N rows streamed; PostgreSQL is stopped (fast) after a third and started after two
    thirds. The middle third waits in the spool and is replayed in order before the last
    third: exactly N rows, none twice, in the order they were served."""
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
            log.flush(30.0)
            pg.stop("fast")
        if i == 2 * requests // 3:
            log.flush(30.0)
            assert outcomes["spooled"] > 0  # the outage really reached the writer
            pg.start()
        assert log.enqueue(record(i, rows))
    log.stop(timeout_s=60.0)
    with psycopg.connect(pg_url) as connection:
        total, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT row_key) FROM predictions"
        ).fetchone() or (0, 0)
        served = [
            r
            for (r,) in connection.execute(
                "SELECT request_id FROM predictions WHERE instance = 0 ORDER BY id"
            )
        ]
    frame = read_window(pg_url, "m")
    n = requests * rows
    assert (total, distinct) == (n, n)
    assert served == [f"r{i:05d}" for i in range(requests)]  # insert order = serving order
    assert outcomes["written"] + outcomes["replayed"] == n
    assert outcomes["replayed"] == outcomes["spooled"]
    assert outcomes["failed"] == 0 and outcomes["dropped"] == 0
    assert len(frame) == n and frame["logged_at"].is_monotonic_increasing
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def test_postgres_down_at_start_spools_then_catches_up(
    pg: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    """The server starts while PostgreSQL is down (compose start order): start() succeeds,
    rows spool, and the schema and rows arrive once PostgreSQL is up."""
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
        log.enqueue(record(i, 1))
    log.flush(30.0)
    assert outcomes["spooled"] == 10
    pg.start()
    log.enqueue(record(10, 1))
    log.stop(timeout_s=60.0)
    # feedback needs the database: it joins the replayed rows
    log2 = PredictionLog(pg_url, spool_dir=tmp_path / "spool")
    log2.start()
    counts = log2.record_feedback("m", [FeedbackLabel("r00003", 0, "b")], {"a", "b"})
    log2.stop()
    frame = read_window(pg_url, "m")
    assert counts.accepted == 1
    assert frame["request_id"].tolist() == [f"r{i:05d}" for i in range(11)]
    assert frame["true_label"].tolist()[3] == "b"
    # the 11th row is written, or spooled and replayed if the retry timer had not run out
    assert outcomes["replayed"] >= 10
    assert outcomes["replayed"] + outcomes["written"] == 11


CHILD = textwrap.dedent(
    """
    import signal, sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from service.predlog import PredictionLog
    from tests.service.test_predlog_faults import record

    mode, url, spool = sys.argv[2], sys.argv[3], sys.argv[4]
    flush_interval = float(sys.argv[5])
    log = PredictionLog(url, spool_dir=spool, flush_interval_s=flush_interval,
                        batch_rows=1_000_000)
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
    else:  # stream: one row per millisecond, reporting the count with a timestamp
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
    url = f"sqlite:///{tmp_path}/p.sqlite"
    return subprocess.Popen(
        [sys.executable, str(script), str(ROOT), mode, url, str(tmp_path / "spool"),
         str(flush_interval_s)],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM predictions").fetchone()[0])


def test_sigterm_drains_the_queue(tmp_path: Path) -> None:
    """2000 rows wait in the queue (the writer would not wake for 60 s); SIGTERM: all 2000
    are in the database when the process has exited."""
    child = _child(tmp_path, "burst", 60.0)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "enqueued 2000"
    child.send_signal(signal.SIGTERM)
    assert child.wait(60) == 0
    assert _rows(tmp_path / "p.sqlite") == 2000


def test_sigkill_loses_at_most_one_flush_interval(tmp_path: Path) -> None:
    """A stream of about 1000 rows/s with a 0.2 s flush interval is SIGKILLed. Committed rows
    survive (SQLite WAL); what is lost is what arrived since the writer's last wake-up, at
    most one flush interval's worth of the stream plus one write: the bound asserted is the
    rows enqueued in the last flush_interval + 0.5 s before the kill (0.5 s: one write on a
    loaded machine)."""
    flush_interval = 0.2
    child = _child(tmp_path, "stream", flush_interval)
    assert child.stdout is not None
    reports: list[tuple[float, int]] = []
    while not reports or reports[-1][1] < 3000:
        stamp, total = child.stdout.readline().split()
        reports.append((float(stamp), int(total)))
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    killed_at, enqueued = reports[-1]
    # the child may enqueue one more group of 10 after its last report
    enqueued_before_window = max(
        (n for t, n in reports if t <= killed_at - flush_interval - 0.5), default=0
    )
    written = _rows(tmp_path / "p.sqlite")
    lost = enqueued - written
    print(f"SIGKILL: enqueued {enqueued} (+<=10), written {written}, lost {lost}")
    assert written <= enqueued + 10
    assert written >= enqueued_before_window
    assert lost <= enqueued - enqueued_before_window
