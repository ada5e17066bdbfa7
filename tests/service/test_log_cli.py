"""``probserve log show`` and ``probserve log compact`` against a real Parquet log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from service.predlog import PredictionLog, PredictionRecord
from service.predlog.reader import read_window


def record(i: int, rows: int) -> PredictionRecord:
    """Request ``r{i}`` of ``rows`` instances, logged at ``1_800_000_000 + i`` seconds."""
    x = (np.arange(rows, dtype=np.float32) + np.float32(i + 0.1)).reshape(rows, 1)
    p = np.tile([0.75, 0.25], (rows, 1))
    return PredictionRecord(
        logged_at=1_800_000_000.0 + i,
        request_id=f"r{i}",
        model="demo",
        version=3,
        protocol="v1",
        classes=["yes", "no"],
        features={"x": x},
        probabilities=p,
        lower=p - 0.125,
        upper=p + 0.125,
        prediction_sets=np.tile([True, False], (rows, 1)),
        labels=["yes"] * rows,
        confidence_level=0.9,
        latency_s=0.5,
    )


def write(url: str, spool: Path, records: list[PredictionRecord]) -> None:
    """Each record in its own segment (flush and seal after each)."""
    log = PredictionLog(url, spool_dir=spool)
    log.start()
    try:
        for r in records:
            assert log.enqueue(r)
            assert log.flush(10.0, seal=True)
    finally:
        log.stop()


def run(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capfd.readouterr()
    try:
        code = main(["log", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capfd.readouterr()
    return code, out, err


def test_show_prints_the_newest_rows_oldest_first(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "predictions")
    write(url, tmp_path / "spool", [record(0, 2), record(1, 3)])
    code, out, err = run(
        capfd, "show", "--model", "demo", "--last", "4", "--prediction-log-url", url
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    # 5 rows logged; the newest 4 are r0/1 and r1/0..2, oldest first.
    assert [(r["request_id"], r["instance"]) for r in rows] == [
        ("r0", 1),
        ("r1", 0),
        ("r1", 1),
        ("r1", 2),
    ]
    first = rows[0]
    assert first["model"] == "demo" and first["version"] == 3
    assert first["logged_at"] == "2027-01-15T08:00:00+00:00"  # 1_800_000_000 s, UTC
    assert first["features.x"] == 1.1  # arange(2) + 0.1: instance 1, float32's shortest text
    assert first["interval_width"] == pytest.approx(0.25)
    assert first["prediction_set.yes"] is True and first["prediction_set.no"] is False


def test_show_refuses_sqlite_and_says_so_in_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/p.sqlite"
    code, _, err = run(capfd, "show", "--model", "demo", "--prediction-log-url", url)
    assert code == 2
    assert err.count("\n") == 1 and "SQLite prediction log is retired" in err
    code, _, err = run(
        capfd, "show", "--model", "demo", "--prediction-log-url", str(tmp_path / "x")
    )
    assert code == 2 and "nothing logged yet" in err and str(tmp_path) not in err


def test_compact_merges_small_segments_and_keeps_every_row(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "predictions")
    write(url, tmp_path / "spool", [record(i, 2) for i in range(3)])
    partition = tmp_path / "predictions" / "model=demo" / "version=3" / "date=2027-01-15"
    assert len(list(partition.glob("*.parquet"))) == 3
    before = read_window(url, "demo")
    code, out, err = run(capfd, "compact", "--prediction-log-url", url)
    assert code == 0, err
    assert out.strip() == "compacted 1 partitions: 3 segments -> 1"
    assert len(list(partition.glob("*.parquet"))) == 1
    after = read_window(url, "demo")
    assert after.equals(before)
    # Nothing small is left in pairs: a second pass does nothing.
    code, out, _ = run(capfd, "compact", "--prediction-log-url", url)
    assert out.strip() == "compacted 0 partitions: 0 segments -> 0"


def test_compact_refuses_postgresql(capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capfd, "compact", "--prediction-log-url", "postgresql://u:pw@h:5432/db")
    assert code == 2 and "Parquet" in err and "pw" not in err
