"""The uncertainty maths: coverage claims checked by simulation, not asserted."""

from __future__ import annotations

import numpy as np
import pytest

from service.uncertainty import (
    conformal_scores,
    conformal_threshold,
    ensemble_mean,
    logit_intervals,
    prediction_sets,
    student_t_quantile,
)


def test_interval_covers_true_logit_at_nominal_rate_when_members_are_unbiased_draws() -> None:
    # Members scattered around the true logit with a common sd: the t interval on K draws is a
    # prediction-style interval for a new draw; for the *centre* it is conservative. Check that
    # it covers the true probability at least at the nominal rate and stays inside (0, 1).
    rng = np.random.default_rng(0)
    n, k = 20000, 8
    true_logit = rng.normal(0, 2, size=n)
    member_logits = true_logit[:, None] + rng.normal(0, 0.5, size=(n, k))
    p1 = 1 / (1 + np.exp(-member_logits))
    probs = np.stack([1 - p1, p1], axis=-1)  # [N, K, 2]
    lower, upper = logit_intervals(probs, 0.95)
    true_p = 1 / (1 + np.exp(-true_logit))
    covered = (lower[:, 1] <= true_p) & (true_p <= upper[:, 1])
    assert covered.mean() >= 0.95
    assert np.all(lower > 0) and np.all(upper < 1)
    assert np.all(lower <= ensemble_mean(probs)) and np.all(ensemble_mean(probs) <= upper)


def test_interval_narrows_as_level_drops_and_members_agree() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([2, 2, 2], size=(50, 5))
    lo95, hi95 = logit_intervals(probs, 0.95)
    lo50, hi50 = logit_intervals(probs, 0.5)
    assert np.all(hi95 - lo95 >= hi50 - lo50)
    same = np.repeat(probs[:, :1, :], 5, axis=1)
    lo, hi = logit_intervals(same, 0.95)
    np.testing.assert_allclose(lo, hi, atol=1e-6)


def test_interval_stays_strictly_inside_unit_interval_when_members_disagree_wildly() -> None:
    p1 = np.array([[1e-12, 1 - 1e-12, 1e-9, 1 - 1e-9]])  # one row, four members at both extremes
    probs = np.stack([1 - p1, p1], axis=-1)
    lower, upper = logit_intervals(probs, 0.999)
    assert np.all(lower > 0)
    assert np.all(upper < 1)


def test_t_quantile_matches_known_values() -> None:
    # Table values of the Student t distribution.
    assert student_t_quantile(0.95, 8) == pytest.approx(2.364624, abs=1e-5)
    assert student_t_quantile(0.90, 2) == pytest.approx(6.313752, abs=1e-5)
    with pytest.raises(ValueError, match="at least 2 members"):
        student_t_quantile(0.95, 1)


def test_conformal_sets_reach_nominal_coverage_on_exchangeable_data() -> None:
    rng = np.random.default_rng(2)
    n_cal, n_test, c = 2000, 20000, 4
    logits = rng.normal(0, 1.5, size=(n_cal + n_test, c))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=row) for row in p])
    scores = conformal_scores(p[:n_cal], y[:n_cal])
    assert np.all(np.diff(scores) >= 0)
    for level in (0.8, 0.9, 0.95):
        q = conformal_threshold(scores, level)
        sets = prediction_sets(p[n_cal:], q)
        coverage = sets[np.arange(n_test), y[n_cal:]].mean()
        assert coverage >= level - 0.01
        assert sets.any(axis=1).all()


def test_conformal_threshold_is_infinite_when_calibration_is_too_small() -> None:
    assert conformal_threshold([0.1, 0.2, 0.3], 0.9) == float("inf")
    assert conformal_threshold(list(np.linspace(0, 1, 99)), 0.5) == pytest.approx(0.5, abs=0.02)
