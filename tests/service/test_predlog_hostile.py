"""The Parquet log under hostile conditions: writes cut short, unwritable places, cut files.

Faults are real: a file-size limit (RLIMIT_FSIZE) makes the kernel refuse a write part-way, as a
full disk does, in a child process; a regular file where the log's directory should be makes
every write fail even for root (CI runs as root, which ignores permission bits).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from service.predlog import PredictionLog, PredictionRecord
from service.predlog.reader import read_window
from service.predlog.spool import read_spool
from tests.service.conftest import ServiceFactory
from tests.service.predlog_support import segments
from tests.service.support import ROW, samples, value

#: The child: ten flushes of one request each; the sixth meets a file-size limit set just above
#: what the spool holds, so its write fails part-way; then the limit goes (space came back).
_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from collections import Counter
    from pathlib import Path
    import numpy as np
    from service.predlog import PredictionLog, PredictionRecord

    root, spool = Path(sys.argv[1]), Path(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    counts = Counter()
    log = PredictionLog(str(root), spool_dir=spool, segment_age_s=3600.0,
                        on_rows=lambda outcome, rows: counts.update({outcome: rows}))
    log.start()

    def record(i):
        rows = 64
        p = np.tile([0.75, 0.25], (rows, 1))
        return PredictionRecord(
            logged_at=1000.0 + i, request_id=f"r{i}", model="m", version=1, protocol="v1",
            classes=["a", "b"], features={"x": np.full((rows, 1), i, dtype=np.float32)},
            probabilities=p, lower=p - 0.125, upper=p + 0.125,
            prediction_sets=np.tile([True, False], (rows, 1)), labels=["a"] * rows,
            confidence_level=0.9, latency_s=0.001)

    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    for i in range(10):
        if i == 5:
            (held,) = spool.glob("segment-*.arrows")
            resource.setrlimit(resource.RLIMIT_FSIZE, (held.stat().st_size + 100, hard))
        log.enqueue(record(i))
        assert log.flush(10.0)
        if i == 5:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    log.stop()
    print(json.dumps(counts))
    """
)


def test_a_write_cut_short_loses_only_its_own_rows_and_leaves_nothing_corrupt(
    tmp_path: Path,
) -> None:
    root, spool = tmp_path / "log", tmp_path / "spool"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), str(spool)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["failed"] == 64, counts  # the one flush whose write was cut
    assert counts["written"] == 9 * 64, counts
    # Every row counted written is readable, in order, and nothing else is there.
    frame = read_window(str(root), "m")
    ids = sorted(set(frame["request_id"]), key=lambda r: int(r[1:]))
    assert ids == [f"r{i}" for i in range(10) if i != 5]
    assert len(frame) == 9 * 64
    # Nothing half-written is left: no spool, no temporary segment.
    assert not list(spool.glob("*.arrows")) and not list(spool.glob(".*"))
    assert not [p for p in root.rglob(".*") if p.is_file()]


def test_a_cut_spool_keeps_every_whole_batch(tmp_path: Path) -> None:
    """The spool alone: the failed write is cut back to the last whole message."""
    child = textwrap.dedent(
        """
        import resource, signal, sys
        from pathlib import Path
        import pyarrow as pa
        from service.predlog.spool import SpoolFile

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        path = Path(sys.argv[1])
        schema = pa.schema([("x", pa.int64())])
        spool = SpoolFile(path, schema)
        batch = pa.record_batch([pa.array(range(1000))], schema=schema)
        spool.append(batch, "b0")
        spool.append(batch, "b1")
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 100, hard))
        try:
            spool.append(batch, "b2")
        except OSError:
            print("refused", spool.broken)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        try:
            spool.append(batch, "b3")
        except OSError:
            print("closed")
        spool.close()
        """
    )
    path = tmp_path / "segment-x.arrows"
    done = subprocess.run(
        [sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused", "True", "closed"]
    _, batches = read_spool(path)
    assert [batch_id for _, batch_id in batches] == ["b0", "b1"]
    assert "partly written" not in done.stderr


def _record(i: int) -> PredictionRecord:
    p = np.tile([0.75, 0.25], (2, 1))
    return PredictionRecord(
        logged_at=1000.0 + i,
        request_id=f"r{i}",
        model="m",
        version=1,
        protocol="v1",
        classes=["a", "b"],
        features={"x": np.full((2, 1), i, dtype=np.float32)},
        probabilities=p,
        lower=p - 0.125,
        upper=p + 0.125,
        prediction_sets=np.tile([True, False], (2, 1)),
        labels=["a", "a"],
        confidence_level=0.9,
        latency_s=0.001,
    )


def test_a_cut_segment_is_skipped_and_named_and_the_rest_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "log"
    log = PredictionLog(str(root), spool_dir=tmp_path / "spool")
    log.start()
    for i in range(2):  # two requests, two sealed segments
        log.enqueue(_record(i))
        assert log.flush(10.0, seal=True)
    log.stop()
    found = segments(root)
    assert len(found) == 2
    second = max(found, key=lambda p: pq.read_table(p)["logged_at"][0].as_py())
    data = second.read_bytes()
    second.write_bytes(data[: len(data) // 2])  # cut short, as by a full disk or a copy
    frame = read_window(str(root), "m")
    assert sorted(set(frame["request_id"])) == ["r0"]
    assert len(frame) == 2
    assert any(second.name in r.getMessage() for r in caplog.records)


def test_an_unwritable_log_place_never_fails_a_prediction(
    bundle_repository: Path, service_factory: ServiceFactory, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log's directory should be")
    service = service_factory(
        bundle_repository,
        metrics=True,
        prediction_log_url=str(blocker / "predictions"),
        prediction_log_spool_dir=blocker / "spool",
    )
    for _ in range(5):
        answer = service.post("/v1/models/toy/predict", json={"instances": [ROW, ROW]})
        assert answer.status_code == 200, answer.text
    name = "probserve_prediction_log_rows_total"
    deadline = time.monotonic() + 10.0
    while True:  # the writer flushes on its own timer
        found = samples(service.get("/metrics").text)
        lost = value(found, name, outcome="failed") + value(found, name, outcome="dropped")
        if lost >= 10 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lost == 10  # every row is counted as lost: neither store nor spool can take it
    assert value(found, name, outcome="written") == value(found, name, outcome="spooled") == 0
