"""The uncertainty maths: coverage claims checked by simulation, not asserted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.uncertainty import (
    MAX_CONFIDENCE_LEVEL,
    MIN_CONFIDENCE_LEVEL,
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


@pytest.mark.parametrize(
    ("level", "members", "exact"),
    [
        # 40-digit values from the regularised incomplete beta function (mpmath).
        (0.999, 2, 636.619248768719051),  # 1 df: tan(0.999 * pi / 2)
        (0.5, 3, 0.816496580927726033),  # 2 df: sqrt(2 / 3)
        (0.95, 8, 2.36462425159278474),
        (0.9, 9, 1.85954803753089853),
        (0.99, 33, 2.73848148201218772),
        (0.999, 257, 3.32893543779898742),
    ],
)
def test_t_quantile_is_exact_to_double_precision(level: float, members: int, exact: float) -> None:
    assert student_t_quantile(level, members) == pytest.approx(exact, rel=1e-12)


def test_t_quantile_agrees_with_scipy_over_the_allowed_levels() -> None:
    # Serving solves the quantile itself (importing scipy.special was a third of start-up);
    # scipy's stdtrit is itself accurate to about 5e-11 relative here.
    from scipy.special import stdtrit

    levels = np.linspace(MIN_CONFIDENCE_LEVEL, MAX_CONFIDENCE_LEVEL, 25)
    for members in [*range(2, 34), 64, 65, 128, 257, 1001]:
        for level in levels:
            expected = float(stdtrit(members - 1, 0.5 + level / 2.0))
            got = student_t_quantile(float(level), members)
            assert got == pytest.approx(expected, rel=1e-9), (level, members)


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


# -- Hand-computed cases: the exact numbers, not only properties ----------------------------------
# The properties above cannot see a constant factor (z in place of t) or one rank of the conformal
# threshold; these cases pin both.


def _binary(member_logits: list[float]) -> np.ndarray:
    """One row, K members, two classes, with member logits of class 1 exactly as given."""
    p1 = 1 / (1 + np.exp(-np.asarray(member_logits, dtype=np.float64)))
    return np.stack([1 - p1, p1], axis=-1)[None]  # [1, K, 2]


def test_interval_for_two_members_by_hand() -> None:
    # Logits 0 and 0.1: mean 0.05, sample sd (ddof=1) = 0.1/sqrt(2) = 0.0707106781,
    # t_{0.975, K-1=1} = 12.7062047, half-width 12.7062047 * 0.0707106781 = 0.898464351;
    # bounds sigmoid(0.05 -+ 0.898464351) = 0.299755094 and 0.720806242.
    # (A normal z = 1.96 would give a lower bound of 0.4779.)
    lower, upper = logit_intervals(_binary([0.0, 0.1]), 0.95)
    assert lower[0, 1] == pytest.approx(0.299755094, abs=1e-8)
    assert upper[0, 1] == pytest.approx(0.720806242, abs=1e-8)
    # Class 0 has the negated logits: the mirror image.
    assert lower[0, 0] == pytest.approx(1 - 0.720806242, abs=1e-8)
    assert upper[0, 0] == pytest.approx(1 - 0.299755094, abs=1e-8)


def test_interval_for_two_members_at_level_one_half_is_one_sd() -> None:
    # t_{0.75, 1} is the Cauchy quantile tan(pi/4) = 1: the half-width is exactly one sample sd.
    # Logits -1 and 1: mean 0, sd sqrt(2); bounds sigmoid(-+sqrt(2)) = 0.195570317, 0.804429683.
    lower, upper = logit_intervals(_binary([-1.0, 1.0]), 0.5)
    assert lower[0, 1] == pytest.approx(1 / (1 + np.exp(np.sqrt(2))), abs=1e-8)
    assert upper[0, 1] == pytest.approx(1 / (1 + np.exp(-np.sqrt(2))), abs=1e-8)
    assert lower[0, 1] == pytest.approx(0.195570317, abs=1e-8)


def test_interval_for_three_members_by_hand() -> None:
    # Logits 0, 0.3, 0.6: mean 0.3, sample sd sqrt((0.09 + 0 + 0.09) / 2) = 0.3,
    # t_{0.975, 2} = 4.30265273, half-width 1.29079582; bounds sigmoid(0.3 -+ 1.29079582)
    # = 0.270754917 and 0.830728040. (z = 1.96 would give 0.4285.)
    lower, upper = logit_intervals(_binary([0.0, 0.3, 0.6]), 0.95)
    assert lower[0, 1] == pytest.approx(0.270754917, abs=1e-8)
    assert upper[0, 1] == pytest.approx(0.830728040, abs=1e-8)


# ceil((n + 1) * 0.5) for n = 1..9: the rank of the threshold among the sorted scores.
RANKS_AT_ONE_HALF = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4, 8: 5, 9: 5}


@pytest.mark.parametrize(("n", "rank"), sorted(RANKS_AT_ONE_HALF.items()))
def test_conformal_threshold_rank_at_level_one_half(n: int, rank: int) -> None:
    # Scores 0.1, 0.2, ... 0.n: the rank-th smallest is rank / 10.
    scores = [round(0.1 * (i + 1), 1) for i in range(n)]
    assert conformal_threshold(scores, 0.5) == scores[rank - 1] == pytest.approx(rank / 10)


@pytest.mark.parametrize(
    ("n", "expected"),
    # ceil((n + 1) * 0.9) > n for n <= 8 (no finite threshold covers 90%: every class is in the
    # set); n = 9 gives rank ceil(9.0) = 9, the largest score.
    [(1, math.inf), (4, math.inf), (8, math.inf), (9, 0.9)],
)
def test_conformal_threshold_is_infinite_exactly_when_the_rank_exceeds_n(
    n: int, expected: float
) -> None:
    scores = [round(0.1 * (i + 1), 1) for i in range(n)]
    assert conformal_threshold(scores, 0.9) == expected


def test_a_probability_below_the_logit_clip_stays_inside_its_interval() -> None:
    # Seen on the demo model after sharper calibration: p(benign) = 1.03e-8 was reported with
    # the interval [1e-7, 1e-7], because containment used the clipped members' mean.
    members = np.array([[[1e-8, 1 - 1e-8], [2e-8, 1 - 2e-8], [3e-8, 1 - 3e-8]]])
    p = ensemble_mean(members)
    lower, upper = logit_intervals(members, 0.95)
    assert p[0, 0] == pytest.approx(2e-8)
    assert lower[0, 0] <= p[0, 0] <= upper[0, 0]
    assert lower[0, 1] <= p[0, 1] <= upper[0, 1]


def _plain_numpy_intervals(members: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The interval formula written with ndarray.mean/std/clip, as the docs state it."""
    raw = members.astype(np.float64)
    p = np.clip(raw, 1e-7, 1 - 1e-7)
    logits = np.log(p) - np.log1p(-p)
    half = student_t_quantile(level, raw.shape[1]) * logits.std(axis=1, ddof=1)
    centre = logits.mean(axis=1)
    lower = np.clip(0.5 * (1 + np.tanh(0.5 * (centre - half))), 1e-7, 1 - 1e-7)
    upper = np.clip(0.5 * (1 + np.tanh(0.5 * (centre + half))), 1e-7, 1 - 1e-7)
    mean = raw.mean(axis=1)
    return np.minimum(lower, mean), np.maximum(upper, mean)


@pytest.mark.parametrize(("rows", "members", "classes"), [(1, 2, 2), (3, 5, 3), (64, 9, 4)])
def test_the_fast_interval_path_matches_plain_numpy(rows: int, members: int, classes: int) -> None:
    # The hot path calls ufuncs directly (no ndarray.mean/std/clip wrappers); the mean is exact
    # and the bounds agree with the plain formula (sigmoid as tanh) to rounding, saturated
    # members included.
    rng = np.random.default_rng(rows)
    x = rng.random((rows, members, classes)).astype(np.float32)
    x[0, 0] = 0.0
    x[0, 0, 0] = 1.0  # one member certain of class 0
    x /= x.sum(axis=2, keepdims=True)
    mean = ensemble_mean(x)
    assert np.array_equal(mean, x.astype(np.float64).mean(axis=1))
    for level in (0.5, 0.9, 0.99):
        lower, upper = logit_intervals(x, level)
        given = logit_intervals(x, level, mean=mean)
        assert np.array_equal(given[0], lower) and np.array_equal(given[1], upper)
        want_lower, want_upper = _plain_numpy_intervals(x, level)
        np.testing.assert_allclose(lower, want_lower, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(upper, want_upper, rtol=1e-12, atol=1e-15)
