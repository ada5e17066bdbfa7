"""Fixtures for service tests: small bundles with random weights, written by the real writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.bundle import CategoricalFeature, Feature, NumericFeature
from training.bundle_writer import write_bundle
from training.onnx_graph import EnsembleWeights

#: The features every test bundle has: two numerics and one categorical.
TEST_FEATURES: list[Feature] = [
    NumericFeature(name="x1", mean=0.0, std=1.0),
    NumericFeature(name="x2", mean=5.0, std=2.0),
    CategoricalFeature(name="colour", categories=["blue", "green", "red"]),
]
TEST_CLASSES = ["no", "yes", "maybe"]
ENCODED_WIDTH = 2 + 3 + 1  # two numerics, three categories plus the unknown bucket

BundleFactory = Callable[..., Path]


def make_weights(
    seed: int, members: int = 4, hidden: int = 8, classes: int = len(TEST_CLASSES)
) -> EnsembleWeights:
    """Random batched MLP weights for the test features."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(0, 0.7, size=(members, ENCODED_WIDTH, hidden)).astype(np.float32)
    b0 = rng.normal(0, 0.1, size=(members, hidden)).astype(np.float32)
    w1 = rng.normal(0, 0.7, size=(members, hidden, classes)).astype(np.float32)
    b1 = rng.normal(0, 0.1, size=(members, classes)).astype(np.float32)
    temps = np.full(members, 1.0, dtype=np.float32)
    return EnsembleWeights(layers=[(w0, b0), (w1, b1)], temperatures=temps)


def write_test_bundle(
    repository: Path, name: str = "toy", *, seed: int = 0, members: int = 4
) -> Path:
    """Write one random-weight bundle version of ``name`` and return its directory."""
    rng = np.random.default_rng(seed)
    sample = {
        "x1": [0.1, None, -2.0, 3.5],
        "x2": [5.0, 4.0, None, 9.0],
        "colour": ["red", None, "purple", "blue"],
    }
    reference = pd.DataFrame(
        {
            "x1": rng.normal(size=64),
            "x2": rng.normal(5, 2, size=64),
            "colour": rng.choice(["blue", "green", "red"], size=64),
        }
    )
    return write_bundle(
        repository,
        name,
        features=TEST_FEATURES,
        classes=TEST_CLASSES,
        target="answer",
        weights=make_weights(seed, members=members),
        conformal_scores=np.sort(rng.uniform(0, 1, size=200)),
        metrics={"accuracy": 0.5},
        training_params={"seed": seed, "members": members},
        data_fingerprint=f"test-{seed}",
        reference=reference,
        sample_inputs=sample,
    )


@pytest.fixture
def bundle_factory(tmp_path: Path) -> BundleFactory:
    """Write bundles into a fresh repository under tmp_path: ``bundle_factory(name, seed=...)``."""
    repository = tmp_path / "models"

    def factory(name: str = "toy", *, seed: int = 0, members: int = 4) -> Path:
        return write_test_bundle(repository, name, seed=seed, members=members)

    return factory


@pytest.fixture
def bundle_repository(tmp_path: Path) -> Path:
    """A repository holding one model ``toy`` at version 1."""
    repository = tmp_path / "models"
    write_test_bundle(repository, "toy")
    return repository
