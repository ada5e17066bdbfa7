"""The synthetic generators: a known P(y|x) summing to one, labels drawn from it, truth aside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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


def test_the_groups_family_flips_labels_by_group() -> None:
    ds = load_dataset("synthetic_groups", synthetic_rows=40_000, seed=5)
    truth = ds.true_probabilities
    assert truth is not None and ds.classes == ["no", "yes"]
    group = ds.frame["group"].to_numpy()
    # Shares 0.6, 0.3, 0.1 (binomial sd at 40k rows under 0.0025).
    for name, share in (("A", 0.6), ("B", 0.3), ("C", 0.1)):
        assert np.mean(group == name) == pytest.approx(share, abs=0.01)
    # A flip with probability e keeps P(y=1 | x, g) = (1-e) p + e (1-p) inside [e, 1-e]:
    # B (e = 0.2) never leaves [0.2, 0.8], C (0.05) [0.05, 0.95]; A (no noise) goes further.
    p_yes = truth[:, 1]
    assert p_yes[group == "B"].min() >= 0.2 and p_yes[group == "B"].max() <= 0.8
    assert p_yes[group == "C"].min() >= 0.05 and p_yes[group == "C"].max() <= 0.95
    assert p_yes[group == "A"].min() < 0.05 and p_yes[group == "A"].max() > 0.95
    # Labels follow the truth within each group (sd under 0.008 for C's 4k rows; 0.03 is four).
    for name in ("A", "B", "C"):
        rows = group == name
        assert np.mean(ds.labels[rows] == 1) == pytest.approx(p_yes[rows].mean(), abs=0.03)
