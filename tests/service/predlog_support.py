"""Helpers shared by the prediction-log tests: finding segments and spools, tearing a spool."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from service.predlog.spool import SpoolFile


def segments(root: Path) -> list[Path]:
    """The prediction segments of a Parquet log (feedback and dot files left out)."""
    return sorted(p for p in root.rglob("part-*.parquet") if "_feedback" not in p.parts)


def segment_rows(root: Path) -> int:
    """Rows in the sealed prediction segments, read from the files' own metadata."""
    return sum(pq.read_metadata(p).num_rows for p in segments(root))


def spools(directory: Path, prefix: str = "segment-") -> list[Path]:
    """The spool files in ``directory`` whose names start with ``prefix``, sorted."""
    return sorted(directory.glob(f"{prefix}*.arrows"))


def torn_spool(path: Path, batches: list[pa.RecordBatch], schema: pa.Schema) -> int:
    """A spool as a killed process leaves it: every batch but the last complete, the last
    cut in half, no end-of-stream marker, no lock. The rows of the complete batches."""
    scratch = path.parent.parent / f"scratch-{uuid.uuid4().hex}{path.suffix}"
    writer = SpoolFile(scratch, schema)
    ends = []
    for k, batch in enumerate(batches):
        writer.append(batch, f"dead-{k}")
        ends.append(scratch.stat().st_size)
    writer.close()
    data = scratch.read_bytes()
    scratch.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: (ends[-2] + ends[-1]) // 2])
    return sum(b.num_rows for b in batches[:-1])
