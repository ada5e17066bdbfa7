"""Fairness slices end to end, on data whose disparity is known: train, serve, label, drift run.

``synthetic_groups`` flips 20% of group B's labels (5% of C's, none of A's) and knows the true
P(y | x, group). A model trained without the group (it is request context only) is served fresh
rows from the generator, each carrying its group as a ``context`` attribute; the generator's own
labels for those rows go back as feedback; ``probserve drift run`` then slices the window by
the logged ``context.group``. Per group, the realized accuracy's bootstrap interval must cover
the group's true expected accuracy on the served rows, and B must come out lowest.

Seeds: the model trains with ``--seed 0`` (its data is the generator at seed 0); the served rows
are the generator at seed SERVED_SEED, so no served row was seen in training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray

from tests.service.conftest import start_live_server
from training.data import SYNTHETIC_GROUP_COLUMN, SYNTHETIC_GROUP_SHARES, synthetic_groups_frame

pytestmark = pytest.mark.slow

PROBSERVE = str(Path(sys.executable).parent / "probserve")
MODEL = "synthetic_groups"
#: Small enough to train in seconds on two cores; no importance section (it explains rows).
TRAIN = [
    "--data", MODEL, "--sensitive", SYNTHETIC_GROUP_COLUMN, "--exclude", SYNTHETIC_GROUP_COLUMN,
    "--synthetic-rows", "4000", "--members", "4", "--epochs", "20", "--seed", "0",
    "--importance-rows", "0", "--no-progress",
]  # fmt: skip
SERVED_SEED = 2024
#: About 300 rows of group C, so its interval is about +-0.045 wide.
SERVED_ROWS = 3000
BATCH = 500


def expected_accuracy(true_p: NDArray[np.float64], predicted: NDArray[np.int64]) -> float:
    """Mean over rows of the true probability of the predicted class: the accuracy expected of
    these predictions over every draw of the labels."""
    return float(true_p[np.arange(len(predicted)), predicted].mean())


def test_expected_accuracy_is_the_true_probability_of_the_predicted_class() -> None:
    true_p = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    # Predicted no, no, yes: 0.9, 0.3 and 0.4 are each row's chance of being right.
    assert expected_accuracy(true_p, np.array([0, 0, 1])) == pytest.approx(1.6 / 3)


def _train(repository: Path) -> None:
    out = subprocess.run(
        [PROBSERVE, "train", *TRAIN, "--model-repository", str(repository)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def _serve(
    repository: Path, workdir: Path, instances: list[dict[str, Any]], labels: list[str]
) -> tuple[str, list[str]]:
    """Serve ``instances`` in batches with a label for every one; the log URL and the served
    labels. The server is stopped before returning, which seals every logged row."""
    log_url = str(workdir / "predictions")
    server = start_live_server(repository, workdir / "server.log", "--prediction-log-url", log_url)
    served: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for start in range(0, len(instances), BATCH):
                answer = client.post(
                    f"/v1/models/{MODEL}/predict",
                    json={"instances": instances[start : start + BATCH]},
                )
                assert answer.status_code == 200, answer.text
                body = answer.json()
                served += [p["label"] for p in body["predictions"]]
                truth = labels[start : start + BATCH]
                feedback = [
                    {"request_id": body["request_id"], "instance": i, "label": t}
                    for i, t in enumerate(truth)
                ]
                fed = client.post(f"/v1/models/{MODEL}/feedback", json={"labels": feedback})
                assert fed.status_code == 200 and fed.json()["accepted"] == len(truth), fed.text
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
    return log_url, served


def _drift_run(repository: Path, log_url: str, workdir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [PROBSERVE, "drift", "run", "--model", MODEL, "--model-repository", str(repository),
         "--prediction-log-url", log_url, "--last", str(SERVED_ROWS),
         "--output", str(workdir / "drift"), "--workspace", str(workdir / "workspace")],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "DO_NOT_TRACK": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    summary: dict[str, Any] = json.loads((workdir / "drift" / "summary.json").read_text())
    return summary


def test_drift_fairness_slices_find_the_known_gap_and_cover_the_truth(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    _train(repository)

    frame, target, true_p = synthetic_groups_frame(SERVED_ROWS, seed=SERVED_SEED)
    groups = frame[SYNTHETIC_GROUP_COLUMN].to_numpy(dtype=object)
    instances: list[dict[str, Any]] = [
        {"x1": r.x1, "x2": r.x2, "x3": r.x3, "context": {"group": r.group}}
        for r in frame.itertuples(index=False)
    ]
    labels = [str(v) for v in target]  # drawn by the generator from the true P(y | x, group)
    log_url, served = _serve(repository, tmp_path, instances, labels)

    summary = _drift_run(repository, log_url, tmp_path)
    assert summary["rows_current"] == SERVED_ROWS
    assert summary["labelled_rows"] == SERVED_ROWS
    column = summary["fairness"]["columns"][SYNTHETIC_GROUP_COLUMN]
    assert column["source"] == "context"
    # Every row carried its group, so neither the 'other' nor the 'missing' bucket appears.
    assert list(column["groups"]) == list(SYNTHETIC_GROUP_SHARES)

    # The truth's columns are the sorted labels, as the manifest's classes are.
    predicted = np.array([["no", "yes"].index(label) for label in served], dtype=np.int64)
    hits = np.array(served, dtype=object) == np.array(labels, dtype=object)
    figures: dict[str, str] = {}
    for group, entry in column["groups"].items():
        rows = groups == group
        truth = expected_accuracy(true_p[rows], predicted[rows])
        realized = entry["figures"]["realized_accuracy"]
        estimated = entry["figures"]["estimated_accuracy"]
        figures[group] = (
            f"{group}: rows {rows.sum()}, true {truth:.3f}, realized {realized['value']:.3f} "
            f"[{realized['low']:.3f}, {realized['high']:.3f}], estimated {estimated['value']:.3f}"
        )
        assert entry["rows"] == entry["labelled_rows"] == realized["rows"] == rows.sum()
        # The drift job's figure is the served labels against the fed-back ones, row for row.
        assert realized["value"] == pytest.approx(hits[rows].mean(), abs=1e-12)
        assert realized["low"] <= truth <= realized["high"], figures[group]
        assert estimated["rows"] == rows.sum()
        assert estimated["low"] <= estimated["value"] <= estimated["high"]
    print("\n" + "\n".join(figures.values()))

    gap = column["disparity"]["realized_accuracy"]
    values = {g: e["figures"]["realized_accuracy"]["value"] for g, e in column["groups"].items()}
    assert gap["lowest"] == "B" and gap["highest"] == "A", gap
    assert gap["difference"] == pytest.approx(values["A"] - values["B"])

    # The label-free estimate is only as group-aware as the model's inputs: calibrated over all
    # traffic, a model that never sees the group expects the same accuracy in every group, so
    # B's estimate sits above what B's labels allow. Realized accuracy is what finds the gap.
    b = column["groups"]["B"]["figures"]
    assert b["estimated_accuracy"]["value"] > b["realized_accuracy"]["high"], figures["B"]
