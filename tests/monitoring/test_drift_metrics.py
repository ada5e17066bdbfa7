"""Drift metrics: what a summary sets, and a push to a real Prometheus Pushgateway."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest

from monitoring.drift.computing import compute_drift
from monitoring.drift.metrics import DriftMetrics, push
from monitoring.drift.settings import DriftSettings
from monitoring.drift.summary import ConformalFigures, DriftSummary
from tests.monitoring.conftest import DriftBundle
from tests.support import free_port, require_program


def _summary(bundle: DriftBundle, labelled: int = 0) -> DriftSummary:
    current = bundle.log_window(np.random.default_rng(5), 200, x1_shift=1.0, labelled=labelled)
    return compute_drift(bundle.manifest, 1, bundle.reference(), current, DriftSettings()).summary


def test_record_sets_every_series(drift_bundle: DriftBundle) -> None:
    summary = _summary(drift_bundle, labelled=60)
    metrics = DriftMetrics()
    metrics.record(summary, reference_accuracy=0.5, finished_at=1234.0)
    text = generate_latest(metrics.registry).decode()
    method = summary.columns["x1"].method
    assert f'probserve_drift_score{{column="x1",method="{method}",model="toy"}}' in text
    assert 'probserve_drift_detected{column="x1",model="toy"} 1.0' in text
    assert 'probserve_dataset_drift{model="toy"}' in text
    assert 'probserve_drift_share{model="toy"}' in text
    assert f'probserve_estimated_accuracy{{model="toy"}} {summary.estimated_accuracy}' in text
    assert f'probserve_realized_accuracy{{model="toy"}} {summary.realized_accuracy}' in text
    assert 'probserve_reference_accuracy{model="toy"} 0.5' in text
    assert 'probserve_mean_interval_width{model="toy",window="reference"}' in text
    assert 'probserve_mean_interval_width{model="toy",window="current"}' in text
    assert 'probserve_ambiguous_share{model="toy",window="current"}' in text
    assert 'probserve_drift_rows{model="toy"} 200.0' in text
    assert 'probserve_drift_last_success_timestamp_seconds{model="toy"} 1234.0' in text


def test_missing_feedback_drops_the_series_never_nan(drift_bundle: DriftBundle) -> None:
    metrics = DriftMetrics()
    metrics.record(_summary(drift_bundle, labelled=60), reference_accuracy=None, finished_at=1.0)
    metrics.record(_summary(drift_bundle, labelled=0), reference_accuracy=None, finished_at=2.0)
    text = generate_latest(metrics.registry).decode()
    assert "probserve_realized_accuracy{" not in text
    assert "probserve_reference_accuracy{" not in text
    assert "NaN" not in text


def test_set_coverage_series_follow_the_conformal_figures(drift_bundle: DriftBundle) -> None:
    figures = ConformalFigures(
        labelled_rows=60,
        static_coverage=0.75,
        static_mean_set_size=1.25,
        adapted_revision=None,
        adapted_coverage=None,
        adapted_mean_set_size=None,
        published_revision=None,
    )
    summary = _summary(drift_bundle, labelled=60).model_copy(update={"conformal": figures})
    metrics = DriftMetrics()
    metrics.record(summary, reference_accuracy=None, finished_at=1.0)
    text = generate_latest(metrics.registry).decode()
    assert 'probserve_conformal_set_coverage{model="toy",sets="static"} 0.75' in text
    assert 'probserve_conformal_set_size{model="toy",sets="static"} 1.25' in text
    assert 'sets="adapted"' not in text  # no adapted scores in use: no series, never NaN
    adapted = figures.model_copy(
        update={"adapted_revision": 2, "adapted_coverage": 0.9, "adapted_mean_set_size": 1.5}
    )
    metrics.record(
        summary.model_copy(update={"conformal": adapted}), reference_accuracy=None, finished_at=2.0
    )
    text = generate_latest(metrics.registry).decode()
    assert 'probserve_conformal_set_coverage{model="toy",sets="adapted"} 0.9' in text
    assert 'probserve_conformal_set_size{model="toy",sets="adapted"} 1.5' in text
    # A run without feedback drops both.
    metrics.record(_summary(drift_bundle, labelled=0), reference_accuracy=None, finished_at=3.0)
    assert "probserve_conformal_set_coverage{" not in generate_latest(metrics.registry).decode()


def test_failures_count_by_reason() -> None:
    metrics = DriftMetrics()
    metrics.fail("toy", "not_enough_rows")
    metrics.fail("toy", "not_enough_rows")
    text = generate_latest(metrics.registry).decode()
    assert 'probserve_drift_failures_total{model="toy",reason="not_enough_rows"} 2.0' in text


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """A real Pushgateway on a free port (no persistence file), stopped afterwards."""
    program = require_program("prometheus-pushgateway")
    port = free_port()
    log = (tmp_path / "pushgateway.log").open("wb")
    proc = subprocess.Popen(
        [program, f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("the Pushgateway did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_push_reaches_a_real_pushgateway(drift_bundle: DriftBundle, pushgateway: str) -> None:
    summary = _summary(drift_bundle)
    metrics = DriftMetrics()
    metrics.record(summary, reference_accuracy=0.5, finished_at=1234.0)
    push(metrics, pushgateway, "toy")
    text = httpx.get(f"{pushgateway}/metrics", timeout=5).text
    lines = [line for line in text.splitlines() if line.startswith("probserve_drift_detected{")]
    x1 = [line for line in lines if 'column="x1"' in line]
    assert len(x1) == 1, lines
    assert 'job="probserve_drift"' in x1[0]
    assert 'model="toy"' in x1[0]
    assert x1[0].endswith(" 1")
