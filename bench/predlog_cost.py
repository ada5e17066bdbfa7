"""Writer CPU per logged row: records of the demo model's shape -> Arrow batches -> a store.

Prints µs of writer-thread CPU per row for 1-row and 64-row requests, for the Parquet store
(batch building, fsync'd IPC spool appends and sealing into Parquet) and, with ``--postgres
URL``, for COPY into PostgreSQL. Run: ``.venv/bin/python -m bench.predlog_cost``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from service.predlog.batches import Partition, columns_of, partition_of, prediction_batch
from service.predlog.parquet_store import ParquetStore
from service.predlog.record import PredictionRecord

FEATURES = 30  # breast_cancer
CLASSES = ("malignant", "benign")


def records(rows: int, count: int) -> list[PredictionRecord]:
    """``count`` requests of ``rows`` instances each, shaped like the demo model's."""
    rng = np.random.default_rng(0)
    names = tuple(f"feature {i}" for i in range(FEATURES))
    out = []
    for i in range(count):
        block = rng.normal(size=(FEATURES, rows)).astype(np.float32)
        p = rng.dirichlet([1.0, 1.0], size=rows)
        features = {name: block[j].reshape(rows, 1) for j, name in enumerate(names)}
        out.append(
            PredictionRecord(
                logged_at=time.time(),
                request_id=f"req-{i:08d}",
                model="breast_cancer",
                version=1,
                protocol="v1",
                classes=CLASSES,
                features=features,
                numeric=(names, block),
                probabilities=p,
                lower=p - 0.05,
                upper=p + 0.05,
                prediction_sets=p > 0.2,
                labels=[CLASSES[k] for k in p.argmax(axis=1)],
                confidence_level=0.95,
                latency_s=0.001,
            )
        )
    return out


def cost(rows: int, total_rows: int, flush_rows: int, store: object) -> float:
    """µs of CPU per row to batch and store ``total_rows`` in flushes of ``flush_rows``."""
    queued = records(rows, total_rows // rows)
    per_flush = max(1, flush_rows // rows)
    partition: Partition = partition_of(queued[0])
    columns = columns_of(queued[0])
    # Fresh batch ids every run: an id the store has already loaded is skipped, not written.
    run = uuid.uuid4().hex
    started = time.process_time()
    for n, start in enumerate(range(0, len(queued), per_flush)):
        batch = prediction_batch(queued[start : start + per_flush], columns)
        store.write(partition, batch, f"bench-{run}-{rows}-{n}")  # type: ignore[attr-defined]
    if hasattr(store, "seal_all"):
        store.seal_all()
    return (time.process_time() - started) / total_rows * 1e6


def main() -> None:
    """Print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=128_000)
    parser.add_argument("--flush-rows", type=int, default=1_000, help="rows per writer flush")
    parser.add_argument("--postgres", default=None, help="a postgresql:// URL to measure COPY")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    warm = records(1, 2)  # Arrow's first compute call initialises its kernels (~0.2 s)
    prediction_batch(warm, columns_of(warm[0]))
    with tempfile.TemporaryDirectory(prefix="predlog-cost-") as tmp:
        for rows in (1, 64):
            store = ParquetStore(f"{tmp}/log-{rows}", Path(tmp) / "spool", f"bench{rows}")
            store.open()
            figures[f"parquet_us_per_row_{rows}_row_requests"] = round(
                cost(rows, args.rows, args.flush_rows, store), 3
            )
    if args.postgres:
        from service.predlog.postgres_store import PostgresStore

        for rows in (1, 64):
            pg = PostgresStore(args.postgres)
            pg.open()
            figures[f"postgres_us_per_row_{rows}_row_requests"] = round(
                cost(rows, args.rows, args.flush_rows, pg), 3
            )
            pg.close()
    print(json.dumps({"flush_rows": args.flush_rows, **figures}, indent=2))


if __name__ == "__main__":
    main()
