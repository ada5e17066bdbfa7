"""Percentile bootstrap intervals: hand-worked small cases, seeding, nominal coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.fairness import (
    accuracy,
    bootstrap_interval,
    conformal_coverage,
    mean_interval_width,
    true_positive_rate,
)


def test_a_constant_figure_has_a_point_interval() -> None:
    y = np.array([0, 1, 1, 0])
    # Every resample of all-right rows is all right: accuracy 1 in every resample.
    assert bootstrap_interval(accuracy, y, y, seed=0) == (1.0, 1.0)
    widths = np.full(4, 0.2)
    assert bootstrap_interval(
        mean_interval_width, y, y, seed=0, interval_width=widths
    ) == pytest.approx((0.2, 0.2))


def test_two_rows_one_right_span_zero_to_one() -> None:
    # Resamples of (right, wrong): accuracy 0 with probability 1/4, 0.5 with 1/2, 1 with 1/4.
    # 25% of the mass sits at each end, so the 2.5% and 97.5% percentiles are 0 and 1 (a
    # thousand resamples all missing an end has probability 2 * 0.75^1000, nil).
    assert bootstrap_interval(accuracy, np.array([1, 0]), np.array([1, 1]), seed=3) == (0.0, 1.0)


def test_sample_parameters_are_resampled_with_their_rows() -> None:
    # Each row's set holds exactly its own label: any resample keeping rows together covers all.
    y = np.array([0, 1, 2, 1])
    sets = np.eye(3, dtype=bool)[y]
    assert bootstrap_interval(conformal_coverage, y, y, seed=1, prediction_sets=sets) == (1.0, 1.0)


def test_resamples_without_a_figure_are_left_out() -> None:
    # A resample without the one positive row has no TPR (NaN, a quarter of them); the others
    # find it (TPR 1), so the interval is (1, 1), not NaN.
    assert bootstrap_interval(true_positive_rate, np.array([1, 0]), np.array([1, 0]), seed=0) == (
        1.0,
        1.0,
    )
    # No positives at all: no finite figure, no interval.
    low, high = bootstrap_interval(true_positive_rate, np.array([0, 0]), np.array([1, 0]), seed=0)
    assert math.isnan(low) and math.isnan(high)
    empty = np.array([], dtype=np.int64)
    assert all(math.isnan(v) for v in bootstrap_interval(accuracy, empty, empty, seed=0))


def test_the_seed_fixes_the_interval() -> None:
    rng = np.random.default_rng(5)
    y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    first = bootstrap_interval(accuracy, y, p, seed=11)
    assert bootstrap_interval(accuracy, y, p, seed=11) == first
    assert bootstrap_interval(accuracy, y, p, seed=12) != first


def test_bad_settings_are_refused() -> None:
    y = np.array([0, 1])
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(accuracy, y, y, seed=0, level=1.0)
    with pytest.raises(ValueError, match="resample"):
        bootstrap_interval(accuracy, y, y, seed=0, resamples=0)


def test_intervals_cover_a_known_accuracy_at_about_their_level() -> None:
    # 200 groups of 300 rows, each row right with probability 0.7: the 95% intervals should hold
    # 0.7 about 95% of the time (percentile intervals run a little short at this size). The
    # binomial sd of the share over 200 groups is 0.015; 0.89 is four of them below 0.95.
    rng = np.random.default_rng(2026)
    covered = 0
    for i in range(200):
        right = (rng.random(300) < 0.7).astype(np.int64)
        low, high = bootstrap_interval(accuracy, right, np.ones(300), seed=i, resamples=400)
        covered += low <= 0.7 <= high
    assert 0.89 <= covered / 200 <= 0.99
