"""The synthetic generators: a known P(y|x) summing to one, labels drawn from it, truth aside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.data import SYNTHETIC_SOURCES, load_dataset


def test_the_multiclass_family_draws_its_labels_from_its_true_probabilities(tmp_path: Path) -> None:
    out = tmp_path / "waves.csv"
    ds = load_dataset("synthetic_multiclass", synthetic_rows=20_000, seed=3, synthetic_output=out)
    assert ds.classes == ["a", "b", "c"]
    assert ds.categorical == ["shape"] and "noise" in ds.numeric
    truth = ds.true_probabilities
    assert truth is not None and truth.shape == (20_000, 3)
    np.testing.assert_allclose(truth.sum(axis=1), 1.0)
    # Labels follow the truth: per class, the label frequency matches the mean true probability
    # (binomial sd at 20k rows is about 0.0035; 0.015 is over four of them).
    frequency = np.bincount(ds.labels, minlength=3) / len(ds.labels)
    np.testing.assert_allclose(frequency, truth.mean(axis=0), atol=0.015)
    written = pd.read_csv(out.with_name("waves.true_proba.csv"))
    assert list(written.columns) == ["true_proba_a", "true_proba_b", "true_proba_c"]
    np.testing.assert_allclose(written.to_numpy(), truth)


def test_every_synthetic_source_carries_its_truth() -> None:
    for source in SYNTHETIC_SOURCES:
        ds = load_dataset(source, synthetic_rows=200, seed=0)
        assert ds.true_probabilities is not None
        assert ds.true_probabilities.shape == (200, len(ds.classes))
