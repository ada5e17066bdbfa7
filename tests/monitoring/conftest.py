"""Drift-test fixtures: a real bundle with an honest reference, and logged rows it really served.

The rows are the model's own outputs (onnxruntime on the bundle's graph), and ground-truth labels
are drawn from the served probabilities, so the probabilities are calibrated by construction and
the label-free estimate has a known target.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")

from service.bundle import (
    MODEL_FILE,
    REFERENCE_FILE,
    CategoricalFeature,
    Feature,
    Manifest,
    NumericFeature,
    graph_columns,
    read_manifest,
)
from service.uncertainty import (
    conformal_threshold,
    ensemble_mean,
    logit_intervals,
    prediction_sets,
)
from tests.monitoring.prometheus_support import prometheus_factory  # noqa: F401  (fixture)
from training.bundle_writer import run_graph, write_bundle
from training.onnx_graph import EnsembleWeights

LEVEL = 0.95
CLASSES_PREFIX = "__proba__"

#: Two numerics and one categorical, three classes (like the service tests' bundle).
FEATURES: list[Feature] = [
    NumericFeature(name="x1", mean=0.0, std=1.0),
    NumericFeature(name="x2", mean=5.0, std=2.0),
    CategoricalFeature(name="colour", categories=["blue", "green", "red"]),
]
CLASSES = ["no", "yes", "maybe"]
ENCODED_WIDTH = 2 + 3 + 1  # two numerics, three categories plus the unknown bucket


def _weights(seed: int, members: int = 4, hidden: int = 8) -> EnsembleWeights:
    """Random batched MLP weights: a real graph with made-up parameters."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(0, 0.7, size=(members, ENCODED_WIDTH, hidden)).astype(np.float32)
    b0 = rng.normal(0, 0.1, size=(members, hidden)).astype(np.float32)
    w1 = rng.normal(0, 0.7, size=(members, hidden, len(CLASSES))).astype(np.float32)
    b1 = rng.normal(0, 0.1, size=(members, len(CLASSES))).astype(np.float32)
    return EnsembleWeights(
        layers=[(w0, b0), (w1, b1)], temperatures=np.ones(members, dtype=np.float32)
    )


def write_test_bundle(repository: Path, name: str = "toy", seed: int = 0) -> Path:
    """One random-weight bundle version written by the real writer."""
    rng = np.random.default_rng(seed)
    return write_bundle(
        repository,
        name,
        features=FEATURES,
        classes=CLASSES,
        target="answer",
        weights=_weights(seed),
        conformal_scores=np.sort(rng.uniform(0, 1, size=200)),
        metrics={"accuracy": 0.5},
        training_params={"seed": seed},
        data_fingerprint=f"test-{seed}",
        reference=draw_features(rng, 64),
        sample_inputs={
            "x1": [0.1, None, -2.0],
            "x2": [5.0, 4.0, None],
            "colour": ["red", None, "purple"],
        },
    )


def draw_features(rng: np.random.Generator, n: int, *, x1_shift: float = 0.0) -> pd.DataFrame:
    """Rows from the test bundle's feature distribution (x1 ~ N(0, 1), x2 ~ N(5, 2), colour)."""
    return pd.DataFrame(
        {
            "x1": rng.normal(x1_shift, 1.0, size=n),
            "x2": rng.normal(5.0, 2.0, size=n),
            "colour": rng.choice(["blue", "green", "red"], size=n).astype(object),
        }
    )


@dataclass(frozen=True)
class Served:
    """Model outputs of some rows, as the service computes them."""

    mean: np.ndarray
    predicted: np.ndarray
    width: np.ndarray
    set_size: np.ndarray


def serve_rows(bundle: Path, manifest: Manifest, features: pd.DataFrame) -> Served:
    """Run the bundle's graph and derive the served outputs at LEVEL."""
    columns = graph_columns(
        manifest.features,
        {c: [None if pd.isna(v) else v for v in features[c]] for c in manifest.feature_names},
    )
    members = run_graph((bundle / MODEL_FILE).read_bytes(), columns)
    mean = ensemble_mean(members)
    predicted = mean.argmax(axis=1)
    lower, upper = logit_intervals(members, LEVEL)
    rows = np.arange(len(mean))
    width = (upper - lower)[rows, predicted]
    threshold = conformal_threshold(manifest.calibration.conformal_scores, LEVEL)
    size = prediction_sets(mean, threshold).sum(axis=1)
    return Served(mean, predicted, width, size)


@dataclass(frozen=True)
class DriftBundle:
    """A bundle directory, its manifest, and helpers to make log windows for it."""

    repository: Path
    path: Path
    manifest: Manifest

    def reference(self) -> pd.DataFrame:
        """The bundle's reference.parquet."""
        return pd.read_parquet(self.path / REFERENCE_FILE)

    def log_window(
        self,
        rng: np.random.Generator,
        n: int,
        *,
        x1_shift: float = 0.0,
        labelled: int = 0,
        start: float = 1_700_000_000.0,
    ) -> pd.DataFrame:
        """``n`` logged rows in service.predlog's reader shape; the first ``labelled`` have
        ground truth drawn from the served probabilities."""
        features = draw_features(rng, n, x1_shift=x1_shift)
        served = serve_rows(self.path, self.manifest, features)
        classes = np.array(self.manifest.classes, dtype=object)
        truth = np.array(
            [rng.choice(len(classes), p=p / p.sum()) for p in served.mean[:labelled]], dtype=int
        )
        true_label = [classes[t] for t in truth] + [None] * (n - labelled)
        frame = pd.DataFrame(
            {
                "logged_at": start + np.arange(n, dtype=np.float64),
                "request_id": [f"r{i}" for i in range(n)],
                "instance": np.zeros(n, dtype=np.int64),
                "model": self.manifest.name,
                "version": 1,
                "protocol": "native",
                "confidence_level": LEVEL,
                "label": classes[served.predicted],
                "interval_width": served.width,
                "set_size": served.set_size.astype(np.int64),
                "latency_s": 0.001,
            }
        )
        for column in features:
            frame[column] = features[column]
        for i, c in enumerate(self.manifest.classes):
            frame[f"{CLASSES_PREFIX}{c}"] = served.mean[:, i]
        frame["true_label"] = pd.Series(true_label, dtype=object)
        return frame


def write_drift_bundle(
    repository: Path, name: str = "toy", reference_rows: int = 2000
) -> DriftBundle:
    """A test bundle whose reference holds the model's outputs on fresh (held-out) rows."""
    path = write_test_bundle(repository, name)
    manifest = read_manifest(path)
    rng = np.random.default_rng(1234)
    features = draw_features(rng, reference_rows)
    served = serve_rows(path, manifest, features)
    ref = features.copy()
    classes = np.array(manifest.classes, dtype=object)
    ref["__label__"] = classes[served.predicted]
    ref["__prediction__"] = classes[served.predicted]
    for i, c in enumerate(manifest.classes):
        ref[f"{CLASSES_PREFIX}{c}"] = served.mean[:, i]
    ref["__interval_width__"] = served.width
    ref["__set_size__"] = served.set_size.astype(np.int64)
    ref.to_parquet(path / REFERENCE_FILE, index=False)
    return DriftBundle(repository, path, manifest)


@pytest.fixture
def drift_bundle(tmp_path: Path) -> DriftBundle:
    """Model ``toy`` version 1 in tmp_path/models with a 2,000-row honest reference."""
    return write_drift_bundle(tmp_path / "models")


DriftBundleFactory = Callable[..., DriftBundle]
