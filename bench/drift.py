"""``python -m bench.drift`` (``make bench-drift``): one ``probserve drift run``, 1M log rows.

The model has 30 features and 3 classes. Its bundle is written from the contract alone
(manifest.json and reference.parquet: all the drift job reads), so the benchmark needs no
trainer. The Parquet log is written by the prediction log's own batch builder and store. The run
is a child process: its wall time and its peak resident memory (``ru_maxrss`` of the waited
child) are the figures. Goal (docs/architecture.md, Monitoring): under 15 s and 1 GiB on a 2-core
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from service.bundle import (
    REFERENCE_FILE,
    Calibration,
    CategoricalFeature,
    Feature,
    Manifest,
    NumericFeature,
    VerificationSample,
    write_manifest,
)
from service.bundle.manifest import (
    REFERENCE_INTERVAL_WIDTH_COLUMN,
    REFERENCE_LABEL_COLUMN,
    REFERENCE_PREDICTION_COLUMN,
    REFERENCE_PROBABILITY_PREFIX,
)

NUMERIC = 25
CATEGORICAL = 5
CLASSES = ["a", "b", "c"]
CATEGORIES = ["red", "green", "blue", "grey"]
MODEL = "bench30"


def _features() -> list[Feature]:
    out: list[Feature] = [
        NumericFeature(name=f"n{i:02d}", mean=0.0, std=1.0) for i in range(NUMERIC)
    ]
    out += [CategoricalFeature(name=f"c{i}", categories=CATEGORIES) for i in range(CATEGORICAL)]
    return out


def _draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {f"n{i:02d}": rng.normal(size=n) for i in range(NUMERIC)}
    for i in range(CATEGORICAL):
        cols[f"c{i}"] = np.asarray(CATEGORIES, dtype=object)[rng.integers(0, 4, size=n)]
    return cols


def _outputs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = rng.dirichlet([2.0, 1.0, 1.0], size=n)
    width = rng.uniform(0.05, 0.4, size=n)
    size = rng.integers(1, 3, size=n)
    return probs, width, size


def write_bundle(repository: Path, rng: np.random.Generator, rows: int = 50_000) -> Path:
    """Manifest and reference.parquet of a 30-feature, 3-class model (version 1)."""
    bundle = repository / MODEL / "1"
    bundle.mkdir(parents=True)
    features = _features()
    sample = {f.name: [0.0 if isinstance(f, NumericFeature) else "red"] for f in features}
    manifest = Manifest(
        name=MODEL,
        created_at=datetime.now(UTC),
        target="y",
        features=features,
        classes=CLASSES,
        members=2,
        calibration=Calibration(temperatures=[1.0, 1.0], conformal_scores=[0.1, 0.5, 0.9]),
        metrics={"accuracy": 0.6},
        model_sha256="0" * 64,
        data_fingerprint="bench",
        sample=VerificationSample(inputs=sample, outputs=[[[0.5, 0.25, 0.25]] * 2]),
    )
    write_manifest(bundle, manifest)
    ref = pd.DataFrame(_draw(rng, rows))
    probs, width, size = _outputs(rng, rows)
    predicted = np.asarray(CLASSES, dtype=object)[probs.argmax(axis=1)]
    ref[REFERENCE_LABEL_COLUMN] = predicted
    ref[REFERENCE_PREDICTION_COLUMN] = predicted
    for i, c in enumerate(CLASSES):
        ref[f"{REFERENCE_PROBABILITY_PREFIX}{c}"] = probs[:, i]
    ref[REFERENCE_INTERVAL_WIDTH_COLUMN] = width
    ref["__set_size__"] = size
    ref.to_parquet(bundle / REFERENCE_FILE, index=False)
    return bundle


def write_log(
    url: str, spool: Path, rng: np.random.Generator, rows: int, chunk: int = 50_000
) -> None:
    """``rows`` predictions of the bench model, written as the server's writer writes them."""
    from service.predlog.batches import columns_of, partition_of, prediction_batch
    from service.predlog.parquet_store import ParquetStore
    from service.predlog.record import PredictionRecord

    store = ParquetStore(url, spool, "bench", segment_rows=chunk * 4)
    store.open()
    start = time.time() - rows * 0.01
    names = [f.name for f in _features()]
    for offset in range(0, rows, chunk):
        n = min(chunk, rows - offset)
        cols = _draw(rng, n)
        probs, width, _ = _outputs(rng, n)
        features = {
            name: np.asarray(cols[name], dtype=np.float32 if name.startswith("n") else object)
            for name in names
        }
        record = PredictionRecord(
            logged_at=start + offset * 0.01,
            request_id=f"bench-{offset}",
            model=MODEL,
            version=1,
            protocol="v1",
            classes=CLASSES,
            features={k: v.reshape(n, 1) for k, v in features.items()},
            probabilities=probs,
            lower=np.clip(probs - width[:, None] / 2, 0.0, 1.0),
            upper=np.clip(probs + width[:, None] / 2, 0.0, 1.0),
            prediction_sets=probs >= 0.3,
            labels=[CLASSES[k] for k in probs.argmax(axis=1).tolist()],
            confidence_level=0.95,
            latency_s=0.001,
        )
        batch = prediction_batch([record], columns_of(record))
        store.write(partition_of(record), batch, f"bench-{offset}")
    store.close()


def main(argv: list[str] | None = None) -> int:
    """Build the log, run the drift job once in a child process, print time and peak memory."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.drift", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--max-rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        root = Path(tmp)
        write_bundle(root / "models", rng)
        started = time.perf_counter()
        log_url = str(root / "predictions")
        write_log(log_url, root / "spool", rng, args.rows)
        generated = time.perf_counter() - started
        command = [
            sys.executable, "-m", "monitoring.cli", "run", "--model", MODEL,
            "--model-repository", str(root / "models"),
            "--prediction-log-url", log_url,
            "--output", str(root / "out"), "--workspace", str(root / "ws"),
            "--max-rows", str(args.max_rows),
        ]  # fmt: skip
        env = {**os.environ, "DO_NOT_TRACK": "1"}
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        if done.returncode != 0:
            print(done.stderr.strip(), file=sys.stderr)
            return 1
        summary = json.loads((root / "out" / "summary.json").read_text())
    figures = {
        "log_rows": args.rows,
        "features": NUMERIC + CATEGORICAL,
        "max_rows": args.max_rows,
        "sampled": summary["sampled"],
        "generate_s": round(generated, 1),
        "drift_run_s": round(elapsed, 1),
        "drift_run_peak_rss_mib": round(peak_kib / 1024, 1),
        "goal": "drift_run_s <= 15 and peak <= 1024 MiB",
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
