"""Train with the real CLI, serve with the real server, and check what a user is promised.

The trainer and the service meet only through the bundle on disk, exactly as `make run` uses
them: `probserve train` writes it, `probserve serve` reads it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from service.bundle import MODEL_FILE, bundle_path, graph_columns, read_manifest
from tests.service.conftest import LiveServer, start_live_server
from training.data import synthetic_frame

pytestmark = pytest.mark.slow

PROBSERVE = str(Path(sys.executable).parent / "probserve")
TRAIN = ["--data", "synthetic", "--synthetic-rows", "1500", "--members", "4", "--epochs", "15"]


def _train(repository: Path, seed: int) -> None:
    out = subprocess.run(
        [PROBSERVE, "train", *TRAIN, "--seed", str(seed), "--model-repository", str(repository)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def trained_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("e2e") / "models"
    _train(repository, seed=0)
    return repository


@pytest.fixture
def server(trained_repository: Path, tmp_path: Path) -> Iterator[LiveServer]:
    live = start_live_server(
        trained_repository, tmp_path / "server.log", "--poll-interval-s", "0.2"
    )
    yield live
    assert live.stop() == 0


def test_served_predictions_are_the_exported_graph_and_sets_cover(
    trained_repository: Path, server: LiveServer
) -> None:
    # Fresh rows from the same generator: exchangeable with the calibration split.
    frame, target, _ = synthetic_frame(1000, seed=123)
    instances = frame.to_dict(orient="records")
    response = httpx.post(
        server.url + "/v1/models/synthetic/predict",
        json={"instances": instances, "confidence_level": 0.9},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(instances)

    # What the service answers is the bundle's graph, run in-process, averaged over members.
    bundle = bundle_path(trained_repository, "synthetic", 1)
    manifest = read_manifest(bundle)
    session = ort.InferenceSession(str(bundle / MODEL_FILE), providers=["CPUExecutionProvider"])
    columns = graph_columns(manifest.features, {c: frame[c].tolist() for c in frame.columns})
    expected = session.run(None, columns)[0].mean(axis=1)
    served = np.array([[p["probabilities"][c] for c in manifest.classes] for p in predictions])
    np.testing.assert_allclose(served, expected, atol=1e-5)

    # Split-conformal sets at 90% cover the true class on fresh data (n_cal = 150, so allow
    # two standard errors below nominal).
    covered = [str(y) in p["prediction_set"] for p, y in zip(predictions, target, strict=True)]
    assert np.mean(covered) >= 0.85
    for p in predictions:
        for c, (lo, hi) in p["intervals"].items():
            assert 0 < lo <= p["probabilities"][c] <= hi < 1


def test_retraining_while_serving_hot_reloads_the_new_version(
    trained_repository: Path, server: LiveServer
) -> None:
    row = {"instances": synthetic_frame(1, seed=5)[0].to_dict(orient="records")}
    url = server.url + "/v1/models/synthetic/predict"
    assert httpx.post(url, json=row).json()["version"] == 1
    _train(trained_repository, seed=1)
    deadline = time.monotonic() + 30
    version = 1
    while version == 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        version = httpx.post(url, json=row).json()["version"]
    assert version == 2
    # The default version policy (latest:1) drops version 1 from the served set: asking for it
    # by number is a clear 404, never a silent answer from version 2.
    old = httpx.post(server.url + "/v1/models/synthetic/versions/1/predict", json=row)
    assert old.status_code == 404
