"""``probserve drift run`` end to end: a SQLite log written by service.predlog's own writer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.monitoring.conftest import CLASSES_PREFIX, DriftBundle

predlog = pytest.importorskip("service.predlog")


def write_log(bundle: DriftBundle, url: str, window: pd.DataFrame) -> None:
    """Log ``window``'s rows through the real writer, then its ground truth as feedback."""
    log = predlog.PredictionLog(url)
    log.start()
    try:
        classes = bundle.manifest.classes
        probs = window[[f"{CLASSES_PREFIX}{c}" for c in classes]].to_numpy()
        for i, row in window.iterrows():
            features = {
                name: [None if pd.isna(row[name]) else row[name]]
                for name in bundle.manifest.feature_names
            }
            width = float(row["interval_width"])
            p = probs[int(i)]
            top = int(p.argmax())
            lower, upper = p.copy(), p.copy()
            lower[top], upper[top] = max(p[top] - width / 2, 0.0), p[top] + width / 2
            members = np.zeros((1, len(classes)), dtype=bool)
            order = np.argsort(-p)[: int(row["set_size"])]
            members[0, order] = True
            log.enqueue(
                predlog.PredictionRecord(
                    logged_at=float(row["logged_at"]),
                    request_id=str(row["request_id"]),
                    model=bundle.manifest.name,
                    version=1,
                    protocol="v1",
                    classes=classes,
                    features=features,
                    probabilities=p[None, :],
                    lower=lower[None, :],
                    upper=upper[None, :],
                    prediction_sets=members,
                    labels=[str(row["label"])],
                    confidence_level=0.95,
                    latency_s=0.001,
                )
            )
    finally:
        log.stop()
    labelled = window[window["true_label"].notna()]
    if len(labelled):
        log = predlog.PredictionLog(url)
        log.start()
        try:
            log.feedback(
                bundle.manifest.name,
                [
                    predlog.FeedbackLabel(str(r.request_id), 0, str(r.true_label))
                    for r in labelled.itertuples()
                ],
            )
        finally:
            log.stop()


def drift(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``probserve drift ...`` as the console script does (root CLI)."""
    code = "import sys; from service.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "drift", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={"DO_NOT_TRACK": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )  # fmt: skip


def _args(bundle: DriftBundle, url: str, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "run", "--model", "toy", "--model-repository", str(bundle.repository),
        "--prediction-log-url", url, "--output", str(tmp_path / "out"),
        "--workspace", str(tmp_path / "ws"), *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_run_writes_report_summary_and_workspace(drift_bundle: DriftBundle, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    window = drift_bundle.log_window(np.random.default_rng(3), 300, x1_shift=1.0, labelled=80)
    write_log(drift_bundle, url, window)
    done = drift(*_args(drift_bundle, url, tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("toy: dataset_drift=")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows_current"] == 300
    assert summary["columns"]["x1"]["drift_detected"] is True
    assert summary["labelled_rows"] == 80
    labelled = window[window["true_label"].notna()]
    assert summary["realized_accuracy"] == pytest.approx(
        float((labelled["label"] == labelled["true_label"]).mean())
    )
    assert summary["versions"] == ["1"]
    assert (tmp_path / "out" / "report.html").stat().st_size > 100_000
    assert (tmp_path / "ws").is_dir()


@pytest.mark.slow
def test_empty_log_and_too_few_rows_exit_3(drift_bundle: DriftBundle, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    write_log(drift_bundle, url, drift_bundle.log_window(np.random.default_rng(4), 0))
    done = drift(*_args(drift_bundle, url, tmp_path), cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "not enough" in done.stderr
    write_log(drift_bundle, url, drift_bundle.log_window(np.random.default_rng(5), 10))
    done = drift(*_args(drift_bundle, url, tmp_path), cwd=tmp_path)
    assert done.returncode == 3
    assert "10 logged row(s)" in done.stderr
    done = drift(*_args(drift_bundle, url, tmp_path, "--min-rows", "5"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_bad_usage_is_one_line_exit_2(drift_bundle: DriftBundle, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    cases = [
        ("--model", "ghost"),  # overrides --model toy: unknown model
        ("--since", "yesterday"),
        ("--since", "1h", "--last", "5"),
        ("--column-method", "x1"),
        ("--column-threshold", "x1=abc"),
    ]
    for extra in cases:
        done = drift(*_args(drift_bundle, url, tmp_path, *extra), cwd=tmp_path)
        assert done.returncode == 2, (extra, done.stderr)
        assert done.stderr.count("\n") == 1, (extra, done.stderr)
        assert "Traceback" not in done.stderr
        assert str(tmp_path) not in done.stderr
