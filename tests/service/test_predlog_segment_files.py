"""What a sealed segment's Parquet file carries besides its rows: statistics and dictionaries
where readers or the file size gain from them, not where they only cost the writer CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from service.predlog.batches import columns_of, prediction_batch
from service.predlog.parquet_store import write_segment
from service.predlog.spool import SpoolFile
from tests.service.test_predlog_one_row_flush import flush


def test_statistics_on_request_columns_only_and_no_dictionary_for_ids(tmp_path: Path) -> None:
    records = flush()  # logged at 1, 2 and 3 s; labels a, b, a
    batch = prediction_batch(records, columns_of(records[0]))
    path = tmp_path / "part.parquet"
    assert write_segment([batch], batch.schema, str(path), pafs.LocalFileSystem()) == 3
    group = pq.read_metadata(path).row_group(0)
    chunks = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    logged_at = chunks["logged_at"].statistics
    assert logged_at is not None and (logged_at.min, logged_at.max) == (1.0, 3.0)
    for name in ("features.x", "probabilities.a", "lower.b", "upper.a", "prediction_set.b"):
        stats = chunks[name].statistics
        assert stats is None or not stats.has_min_max, name
    assert not any("DICTIONARY" in e for e in chunks["request_id"].encodings)
    assert any("DICTIONARY" in e for e in chunks["label"].encodings)
    assert pq.read_table(path).to_pydict() == batch.to_pydict()


SEAL_IN_A_FRESH_PROCESS = """
import sys
from pathlib import Path
from service.predlog.parquet_store import ParquetStore

def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key))
    return int(line.split()[1]) / 1024

store = ParquetStore(sys.argv[1], Path(sys.argv[2]), "sealer")
before = status("VmRSS:")
store.open()  # seals the spool its dead writer left
print(status("VmHWM:") - before)
"""


def _seal_growth_mib(tmp_path: Path, batches: int) -> tuple[float, float]:
    """A spool of ``batches`` 8,192-row batches left by a dead writer: its size, and how far
    the peak memory of a fresh process that seals it grows while sealing (MiB)."""
    from tests.service.test_predlog import record, schema_with_partition

    columns = columns_of(record(0))
    batch = prediction_batch([record(0, rows=8192)], columns)
    spool_dir = tmp_path / f"spool-{batches}"
    spool_dir.mkdir()
    path = spool_dir / "segment-dead-000001.arrows"
    spool = SpoolFile(path, schema_with_partition(columns, "m", 1, "1970-01-01"))
    for i in range(batches):
        spool.append(batch, f"dead-{i}")
    spool.close()
    size_mib = path.stat().st_size / 2**20
    root = tmp_path / f"log-{batches}"
    done = subprocess.run(
        [sys.executable, "-c", SEAL_IN_A_FRESH_PROCESS, str(root), str(spool_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert not path.exists()  # sealed
    rows = sum(pq.read_metadata(p).num_rows for p in root.rglob("part-*.parquet"))
    assert rows == batches * 8192
    return size_mib, float(done.stdout.strip().splitlines()[-1])


def test_sealing_holds_a_row_group_not_the_spool(tmp_path: Path) -> None:
    # 10 and 50 batches: past the first 65,536-row group, a larger spool must not cost the
    # sealing process memory in proportion (memory-mapping it, or reading it whole, did: the
    # 36 MiB more of spool cost 48 MiB more of peak).
    small_size, small_growth = _seal_growth_mib(tmp_path, 10)
    large_size, large_growth = _seal_growth_mib(tmp_path, 50)
    assert large_size - small_size > 30
    assert large_growth - small_growth < (large_size - small_size) / 2, (
        small_growth,
        large_growth,
    )
