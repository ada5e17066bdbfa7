"""A trained bundle holds what was fitted: the exported temperature, the stored conformal scores
and a reference whose model outputs are those of exactly the held-out rows.

The fit is redone here stage by stage (training is deterministic for a seed), so a pipeline that
exported temperatures of 1, scored another split or built the reference from training rows fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from scipy.special import softmax

from service.bundle import Manifest, graph_columns, read_manifest
from service.bundle.manifest import (
    REFERENCE_INTERVAL_WIDTH_COLUMN,
    REFERENCE_LABEL_COLUMN,
    REFERENCE_PREDICTION_COLUMN,
    REFERENCE_PROBABILITY_PREFIX,
    REFERENCE_SET_SIZE_COLUMN,
    REFERENCE_SPLIT_COLUMN,
)
from service.uncertainty import conformal_scores, logit_intervals
from tests.training.helpers import read_card, tiny_config
from training.calibrate import fit_mean_temperature
from training.data import load_dataset
from training.ensemble import fit_ensemble, member_logits
from training.pipeline import TrainResult, train
from training.preprocess import encode_features, fit_features
from training.splits import SplitSizes, stratified_splits

pytestmark = pytest.mark.slow

HELD_OUT = ("validation", "calibration", "test")


@dataclass(frozen=True)
class Refit:
    """The trained bundle and the same fit redone here."""

    result: TrainResult
    manifest: Manifest
    parts: dict[str, pd.DataFrame]
    labels: dict[str, np.ndarray]
    logits: dict[str, np.ndarray]
    temperature: float


@pytest.fixture(scope="module")
def refit(tmp_path_factory: pytest.TempPathFactory) -> Refit:
    config = tiny_config("breast_cancer", tmp_path_factory.mktemp("fitted"))
    result = train(config)
    ds = load_dataset(config.data, seed=config.seed)
    sizes = SplitSizes(config.validation_size, config.calibration_size, config.test_size)
    splits = stratified_splits(ds.labels, sizes, config.seed)
    parts = {
        s: ds.frame.iloc[getattr(splits, s)].reset_index(drop=True) for s in ("train", *HELD_OUT)
    }
    labels = {s: ds.labels[getattr(splits, s)] for s in parts}
    features = fit_features(parts["train"], ds.numeric, ds.categorical)
    encoded = {s: encode_features(parts[s], features) for s in parts}
    trained = fit_ensemble(
        encoded["train"],
        labels["train"],
        encoded["validation"],
        labels["validation"],
        len(ds.classes),
        config.ensemble(),
    )
    logits = {s: member_logits(trained.layers, encoded[s]) for s in HELD_OUT}
    temperature = fit_mean_temperature(logits["validation"], labels["validation"])
    manifest = read_manifest(result.bundle_path)
    return Refit(result, manifest, parts, labels, logits, temperature)


def _run_graph(refit: Refit, rows: pd.DataFrame) -> np.ndarray:
    session = ort.InferenceSession(
        str(refit.result.bundle_path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    values = {f: rows[f].tolist() for f in refit.manifest.feature_names}
    columns = graph_columns(refit.manifest.features, values)
    return np.asarray(session.run(None, columns)[0], dtype=np.float64)


def test_the_graph_serves_the_fitted_temperature(refit: Refit) -> None:
    t = refit.temperature
    assert abs(t - 1.0) > 0.05  # else temperature 1 could not be told apart
    assert refit.manifest.calibration.temperatures == [float(np.float32(t))] * 4
    assert refit.manifest.calibration.temperature_objective == "ensemble_mean"
    assert refit.manifest.metrics["temperature"] == pytest.approx(t, rel=1e-6)
    served = _run_graph(refit, refit.parts["test"])
    z = refit.logits["test"].astype(np.float64)
    # By hand on the row where member 0 is least sure: softmax of logits over the temperature.
    row = int(np.argmin(np.abs(z[:, 0, 1] - z[:, 0, 0])))
    p1 = 1.0 / (1.0 + math.exp(-(z[row, 0, 1] - z[row, 0, 0]) / t))
    assert served[row, 0, 1] == pytest.approx(p1, abs=1e-5)
    np.testing.assert_allclose(served, softmax(z / t, axis=2), atol=1e-5)
    assert np.max(np.abs(served - softmax(z, axis=2))) > 1e-2  # temperature 1 is not served


def test_the_stored_conformal_scores_are_the_served_means_on_the_calibration_split(
    refit: Refit,
) -> None:
    served = _run_graph(refit, refit.parts["calibration"]).mean(axis=1)
    labels = refit.labels["calibration"]
    expected = conformal_scores(served, labels)
    stored = np.array(refit.manifest.calibration.conformal_scores)
    assert len(stored) == len(labels)
    np.testing.assert_allclose(stored, expected, atol=1e-6)
    # By hand for the calibration row with the largest score: 1 - p(true class).
    worst = int(np.argmax(1.0 - served[np.arange(len(labels)), labels]))
    assert stored[-1] == pytest.approx(1.0 - served[worst, labels[worst]], abs=1e-6)


def test_the_reference_is_the_held_out_rows_with_their_served_outputs(refit: Refit) -> None:
    ref = pd.read_parquet(refit.result.bundle_path / "reference.parquet")
    manifest = refit.manifest
    assert manifest.schema_version == 2 and manifest.reference_outputs_held_out
    held_out = pd.concat([refit.parts[s] for s in HELD_OUT], ignore_index=True)
    assert len(ref) == len(held_out)
    pd.testing.assert_frame_equal(ref[manifest.feature_names], held_out[manifest.feature_names])
    assert ref[REFERENCE_SPLIT_COLUMN].tolist() == [
        s for s in HELD_OUT for _ in range(len(refit.parts[s]))
    ]
    labels = np.concatenate([refit.labels[s] for s in HELD_OUT])
    assert ref[REFERENCE_LABEL_COLUMN].tolist() == [manifest.classes[i] for i in labels]
    # Two rows by hand, the first validation row and the last test row.
    scores = manifest.calibration.conformal_scores
    threshold = scores[math.ceil((len(scores) + 1) * 0.95) - 1]
    for i in (0, len(ref) - 1):
        members = _run_graph(refit, held_out.iloc[[i]])
        mean = members.mean(axis=1)[0]
        for c, name in enumerate(manifest.classes):
            assert ref[f"{REFERENCE_PROBABILITY_PREFIX}{name}"][i] == pytest.approx(mean[c], 1e-6)
        top = int(np.argmax(mean))
        assert ref[REFERENCE_PREDICTION_COLUMN][i] == manifest.classes[top]
        lower, upper = logit_intervals(members, 0.95)
        width = upper[0, top] - lower[0, top]
        assert ref[REFERENCE_INTERVAL_WIDTH_COLUMN][i] == pytest.approx(width, abs=1e-6)
        size = sum(1 for c in range(len(mean)) if c == top or 1 - mean[c] <= threshold)
        assert ref[REFERENCE_SET_SIZE_COLUMN][i] == size


def test_the_card_and_metrics_state_the_calibration_before_and_after(refit: Refit) -> None:
    m = refit.manifest.metrics
    for key in ("ece", "ece_member_temperatures", "ece_uncalibrated", "estimated_accuracy"):
        assert 0.0 <= m[key] <= 1.0, key
    # The served estimate is the mean top-class probability of the test split.
    served = _run_graph(refit, refit.parts["test"]).mean(axis=1)
    assert m["estimated_accuracy"] == pytest.approx(float(served.max(axis=1).mean()), abs=1e-6)
    card = read_card(refit.result)
    for key in ("ece", "ece_member_temperatures", "ece_uncalibrated", "estimated_accuracy"):
        assert f"| {m[key]:.4f} |" in card, key
    assert f"T = {refit.temperature:.3f}" in card
