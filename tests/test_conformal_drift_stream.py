"""Conformal sets under drift, end to end: a stream whose labels drift after a point, served by a
real `probserve serve --workers 2`, labelled through the feedback endpoint, and recalibrated by
`probserve drift run --adapt-conformal`.

Before the shift labels follow the generator's true P(y|x); after it a quarter of them are
flipped (the concept drifts, the features do not). The bundle's 90% sets then cover far below
90%; once the drift job has published a recalibration on the first post-shift window, the sets
the servers answer with on the next window hold 0.88-0.92, and the drift job reports both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from service.predlog.reader import read_window
from tests.service.conftest import LiveServer, start_live_server
from training.data import synthetic_frame

pytestmark = pytest.mark.slow

PROBSERVE = str(Path(sys.executable).parent / "probserve")
LEVEL = 0.9
#: Rows per window; the realized coverage of one window has a standard error of about 0.007.
WINDOW = 2000
FLIP = 0.25


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stream") / "models"
    out = subprocess.run(
        [PROBSERVE, "train", "--data", "synthetic", "--synthetic-rows", "3000", "--members", "4",
         "--epochs", "20", "--seed", "0", "--name", "stream", "--model-repository", str(root)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return root


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    return str(tmp_path / "predictions")


@pytest.fixture
def server(repository: Path, tmp_path: Path, log_url: str) -> Iterator[LiveServer]:
    live = start_live_server(
        repository,
        tmp_path / "server.log",
        "--workers", "2", "--poll-interval-s", "0.5", "--prediction-log-url", log_url,
        "--prediction-log-segment-seconds", "0.5",
    )  # fmt: skip
    yield live
    live.stop()


def stream(*, seed: int, drifted: bool) -> tuple[pd.DataFrame, list[str]]:
    """One window of instances and their labels (flipped with probability FLIP when drifted)."""
    frame, _, true_p = synthetic_frame(WINDOW, seed)
    rng = np.random.default_rng(1000 + seed)
    y = (rng.random(WINDOW) < true_p[:, 1]).astype(int)
    if drifted:
        y = np.where(rng.random(WINDOW) < FLIP, 1 - y, y)
    return frame, ["yes" if v else "no" for v in y]


def serve_window(
    server: LiveServer, frame: pd.DataFrame, labels: list[str]
) -> tuple[float, set[int]]:
    """Send the window in requests of 50 rows with feedback for every row; the realized
    coverage of the sets answered and the conformal revisions they came from."""
    covered, revisions = 0, set[int]()
    records = frame.to_dict("records")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for start in range(0, len(records), 50):
            chunk = records[start : start + 50]
            answer = client.post(
                "/v1/models/stream/predict",
                json={"instances": chunk, "confidence_level": LEVEL},
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            revisions.add(body["conformal_revision"])
            truth = labels[start : start + 50]
            covered += sum(
                t in p["prediction_set"] for p, t in zip(body["predictions"], truth, strict=True)
            )
            fed = client.post(
                "/v1/models/stream/feedback",
                json={
                    "labels": [
                        {"request_id": body["request_id"], "instance": i, "label": t}
                        for i, t in enumerate(truth)
                    ]
                },
            )
            assert fed.status_code == 200 and fed.json()["accepted"] == len(truth), fed.text
    return covered / len(records), revisions


def wait_until_readable(log_url: str, rows: int, timeout_s: float = 20.0) -> None:
    """Wait until the newest ``rows`` rows and their labels are sealed into readable segments
    (the servers seal every 0.5 s here)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            window = read_window(log_url, "stream", last=rows)
        except ValueError:
            window = pd.DataFrame()
        if len(window) == rows and window["true_label"].notna().all():
            return
        time.sleep(0.2)


def drift_run(repository: Path, log_url: str, tmp_path: Path, name: str) -> dict[str, Any]:
    """``probserve drift run --adapt-conformal`` over the newest window; its conformal figures."""
    wait_until_readable(log_url, WINDOW)
    out = subprocess.run(
        [PROBSERVE, "drift", "run", "--model", "stream", "--model-repository", str(repository),
         "--prediction-log-url", log_url, "--last", str(WINDOW), "--output", str(tmp_path / name),
         "--workspace", str(tmp_path / "ws"), "--adapt-conformal",
         "--adapt-window-rows", str(WINDOW)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "DO_NOT_TRACK": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    figures: dict[str, Any] = json.loads((tmp_path / name / "summary.json").read_text())
    return figures["conformal"]  # type: ignore[no-any-return]


def revision_everywhere(server: LiveServer) -> float:
    """probserve_conformal_revision of the stream model: the lowest over the live workers."""
    for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("probserve_conformal_revision{") and 'model="stream"' in line:
            return float(line.rsplit(" ", 1)[1])
    return -1.0


def test_recalibrated_sets_hold_their_level_under_concept_drift(
    repository: Path, server: LiveServer, tmp_path: Path, log_url: str
) -> None:
    before, revisions = serve_window(server, *stream(seed=11, drifted=False))
    assert revisions == {0}
    assert 0.87 <= before <= 0.94, before  # the bundle's sets before the shift

    shifted, _ = serve_window(server, *stream(seed=12, drifted=True))
    first = drift_run(repository, log_url, tmp_path, "after-shift")
    assert first["labelled_rows"] == WINDOW
    assert first["static_coverage"] == pytest.approx(shifted)  # what the servers answered
    assert first["static_coverage"] < 0.85, first
    assert first["adapted_revision"] is None and first["published_revision"] == 1

    # Both workers pick up revision 1 within a few polls (the gauge is the lowest over the live
    # workers); every answer of the next window must then come from it.
    deadline = time.monotonic() + 30
    while revision_everywhere(server) != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert revision_everywhere(server) == 1
    adapted, revisions = serve_window(server, *stream(seed=13, drifted=True))
    second = drift_run(repository, log_url, tmp_path, "adapted")
    print(
        f"\nrealized coverage at {LEVEL}: before the shift {before:.3f}; after it, static "
        f"{first['static_coverage']:.3f} (window 2) and {second['static_coverage']:.3f} "
        f"(window 3); adapted {second['adapted_coverage']:.3f} (window 3, revision "
        f"{second['adapted_revision']}, mean set size {second['adapted_mean_set_size']:.2f} vs "
        f"{second['static_mean_set_size']:.2f})"
    )
    assert revisions == {1}, revisions
    assert second["adapted_revision"] == 1
    assert second["adapted_coverage"] == pytest.approx(adapted)
    assert 0.88 <= adapted <= 0.92, adapted
    assert second["static_coverage"] < 0.85, second
