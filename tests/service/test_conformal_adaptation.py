"""A real server picks up recalibrated conformal scores published beside a serving bundle: every
answer says which revision its sets came from, and a bad file changes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.bundle import ADAPTED_CONFORMAL_FILE, AdaptedConformal, write_adapted_conformal
from tests.service.conftest import LiveServer, start_live_server, write_test_bundle

ROW = {"x1": 0.3, "x2": 4.0, "colour": "red"}
PREDICT = "/v1/models/toy/predict"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, Path]]:
    bundle = write_test_bundle(tmp_path / "models", "toy")
    server = start_live_server(
        tmp_path / "models", tmp_path / "server.log", "--poll-interval-s", "0.2"
    )
    yield server, bundle
    server.stop()


def publish(bundle: Path, revision: int, score: float) -> None:
    """50 identical scores: at level 0.9 the threshold is that score (rank ceil(51 * 0.9) = 46)."""
    write_adapted_conformal(
        bundle,
        AdaptedConformal(
            model="toy",
            version=1,
            revision=revision,
            window_rows=50,
            created_at=time.time(),
            scores=[score] * 50,
        ),
    )


def predict(server: LiveServer) -> dict[str, object]:
    answer = httpx.post(
        server.url + PREDICT, json={"instances": [ROW] * 4, "confidence_level": 0.9}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def wait_for(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("not within 15 s")


def set_sizes(body: dict[str, object]) -> list[int]:
    predictions = body["predictions"]
    assert isinstance(predictions, list)
    return [len(p["prediction_set"]) for p in predictions]


def revision_metric(server: LiveServer) -> float:
    for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("probserve_conformal_revision{") and 'model="toy"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no probserve_conformal_revision series for toy")


def test_published_scores_are_served_by_revision_and_a_bad_file_changes_nothing(
    served: tuple[LiveServer, Path],
) -> None:
    server, bundle = served
    assert predict(server)["conformal_revision"] == 0
    assert revision_metric(server) == 0

    # Threshold 0: only a class with probability 1 would pass; the argmax is always in.
    publish(bundle, 1, 0.0)
    wait_for(lambda: predict(server)["conformal_revision"] == 1)
    assert set_sizes(predict(server)) == [1, 1, 1, 1]
    # Threshold 1: every class passes (1 - p <= 1).
    publish(bundle, 2, 1.0)
    wait_for(lambda: predict(server)["conformal_revision"] == 2)
    assert set_sizes(predict(server)) == [3, 3, 3, 3]
    assert revision_metric(server) == 2
    meta = httpx.get(server.url + "/v1/models/toy", timeout=10).json()
    assert meta["conformal"]["source"] == "adapted" and meta["conformal"]["revision"] == 2
    v2 = httpx.post(
        server.url + "/v2/models/toy/infer",
        json={
            "inputs": [
                {"name": "x1", "shape": [1, 1], "datatype": "FP32", "data": [0.3]},
                {"name": "x2", "shape": [1, 1], "datatype": "FP32", "data": [4.0]},
                {"name": "colour", "shape": [1, 1], "datatype": "BYTES", "data": ["red"]},
            ]
        },
        timeout=10,
    ).json()
    assert v2["parameters"]["conformal_revision"] == 2

    # A torn or foreign file is refused with one warning; revision 2 keeps serving.
    (bundle / ADAPTED_CONFORMAL_FILE).write_text('{"model": "toy", "version": 1, "revi')
    time.sleep(1.0)  # five polls
    assert predict(server)["conformal_revision"] == 2
    # Removed: back to the bundle's own calibration scores.
    (bundle / ADAPTED_CONFORMAL_FILE).unlink()
    wait_for(lambda: predict(server)["conformal_revision"] == 0)
    assert revision_metric(server) == 0
    server.stop()
    log = server.log.read_text()
    assert log.count("adapted conformal scores refused") == 1, log[-2000:]
    assert "Traceback" not in log
