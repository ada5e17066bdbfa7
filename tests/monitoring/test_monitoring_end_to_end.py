"""The whole monitoring path for real: service + drift monitor + Prometheus, every query answered.

A real ``probserve serve`` logs predictions to SQLite and exposes /metrics; a real
``probserve drift serve`` reads that log every few seconds and exposes its own /metrics; a real
Prometheus scrapes both every second and evaluates the repository's rules. Traffic has one
numeric feature shifted by one standard deviation and some feedback labels. Then every PromQL
expression of both Grafana dashboards and every rule must return data, and the shifted feature
must reach Prometheus as drifted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.bundle import write_manifest
from service.bundle.manifest import SensitiveColumn
from tests.monitoring.conftest import draw_features, write_drift_bundle
from tests.monitoring.prometheus_support import (
    PrometheusError,
    PrometheusFactory,
    all_expressions,
)
from tests.service.conftest import LiveServer, start_live_server
from tests.support import free_port


def _rows(n: int, seed: int, shift: float) -> list[dict[str, object]]:
    frame = draw_features(np.random.default_rng(seed), n, x1_shift=shift)
    return [
        {
            "x1": float(r.x1),
            "x2": float(r.x2),
            "colour": str(r.colour),
            "context": {"region": "north" if i % 2 else "south"},
        }
        for i, r in enumerate(frame.itertuples(index=False))
    ]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LiveServer, int, Path]]:
    bundle = write_drift_bundle(tmp_path / "models")
    # Fairness figures sliced by a model input and by a request context attribute, so the
    # fairness panels and alert have data.
    colour = SensitiveColumn(name="colour", source="feature", groups=["blue", "green", "red"])
    region = SensitiveColumn(name="region", source="context", groups=["north", "south"])
    sensitive = {"sensitive": [colour, region]}
    write_manifest(bundle.path, bundle.manifest.model_copy(update=sensitive))
    url = str(tmp_path / "predictions")
    server = start_live_server(
        bundle.repository,
        tmp_path / "server.log",
        PROBSERVE_PREDICTION_LOG_URL=url,
        PROBSERVE_PREDICTION_LOG_SEGMENT_SECONDS="0.5",  # readable by the drift job quickly
    )
    drift_port = free_port()
    command = [
        sys.executable, "-m", "service.cli", "drift", "serve", "--every", "3s",
        "--port", str(drift_port), "--model-repository", str(bundle.repository),
        "--prediction-log-url", url, "--output", str(tmp_path / "drift"),
        "--workspace", str(tmp_path / "workspace"), "--min-rows", "30",
    ]  # fmt: skip
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    with (tmp_path / "drift.log").open("wb") as sink:
        drift = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
    try:
        yield server, drift_port, tmp_path
    finally:
        drift.terminate()
        try:
            drift.wait(20)
        except subprocess.TimeoutExpired:
            drift.kill()
        server.stop()


@pytest.mark.slow
def test_every_dashboard_query_and_rule_has_data(
    stack: tuple[LiveServer, int, Path], prometheus_factory: PrometheusFactory
) -> None:
    server, drift_port, workdir = stack
    prometheus = prometheus_factory([f"127.0.0.1:{server.port}", f"127.0.0.1:{drift_port}"])
    request_ids: list[str] = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i, row in enumerate(_rows(300, seed=7, shift=1.0)):
            answer = client.post("/v1/models/toy/predict", json={"instances": [row]})
            assert answer.status_code == 200, answer.text
            request_ids.append(answer.json()["request_id"])
            if i == 0:  # one bad request, so errors by type has a series
                bad = client.post("/v1/models/toy/predict", json={"instances": [{}]})
                assert bad.status_code == 400
        labels = [{"request_id": r, "instance": 0, "label": "yes"} for r in request_ids[:80]]
        feedback = client.post("/v1/models/toy/feedback", json={"labels": labels})
        assert feedback.status_code == 200 and feedback.json()["accepted"] == 80

    # The drift monitor's next run sees the window; Prometheus scrapes its figures.
    log_tail = (workdir / "drift.log").read_text
    try:
        prometheus.wait_for('probserve_drift_rows{model="toy"} >= 300', timeout_s=120)
    except PrometheusError as exc:
        raise AssertionError(f"{exc}\ndrift monitor log:\n{log_tail()[-3000:]}") from None
    drifted = prometheus.wait_for('probserve_drift_detected{model="toy",column="x1"} == 1')
    assert drifted, "the shifted feature reaches Prometheus as drifted"
    realized = prometheus.wait_for('probserve_realized_accuracy{model="toy"}')
    assert 0.0 <= float(realized[0]["value"][1]) <= 1.0
    # Every row in some colour group; the context attribute went from the requests through the
    # log to the drift monitor (a scrape may still show a run older than the 300-row one).
    prometheus.wait_for('sum(probserve_fairness_group_rows{model="toy",column="colour"}) >= 300')
    regions = prometheus.wait_for(
        'probserve_fairness_group_rows{model="toy",column="region"} == 150'
    )
    assert sorted(g["metric"]["group"] for g in regions) == ["north", "south"]

    time.sleep(3)  # two more scrapes, so every rate() has two samples in its window
    missing = []
    for expression in all_expressions():
        try:
            prometheus.wait_for(expression.expr, timeout_s=15)
        except PrometheusError:
            missing.append(f"{expression.source}: {expression.expr}")
    assert not missing, "queries without data:\n" + "\n".join(missing)
