"""Between-group disparities: hand-computed, and equal to Fairlearn's own definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
)

from service.fairness import Disparity, between_groups, demographic_parity, equalized_odds

# The rows of test_fairness_metrics: A has selection rate 0.5, TPR 0.5, FPR 0.5;
# B has selection rate 0.75, TPR 1, FPR 2/3.
Y_TRUE = np.array([1, 1, 0, 0, 1, 0, 0, 0])
Y_PRED = np.array([1, 0, 0, 1, 1, 1, 1, 0])
GROUP = np.array(["A"] * 4 + ["B"] * 4)


def test_demographic_parity_by_hand() -> None:
    # Difference 0.75 - 0.5 = 0.25; ratio 0.5 / 0.75 = 2/3.
    dp = demographic_parity({"A": 0.5, "B": 0.75})
    assert dp.difference == pytest.approx(0.25)
    assert dp.ratio == pytest.approx(2 / 3)
    assert dp.difference == pytest.approx(
        demographic_parity_difference(Y_TRUE, Y_PRED, sensitive_features=GROUP)
    )
    assert dp.ratio == pytest.approx(
        demographic_parity_ratio(Y_TRUE, Y_PRED, sensitive_features=GROUP)
    )


def test_equalized_odds_by_hand() -> None:
    # TPR: 1 - 0.5 = 0.5, ratio 0.5. FPR: 2/3 - 1/2 = 1/6, ratio (1/2) / (2/3) = 0.75.
    # Equalized odds: the larger difference 0.5, the smaller ratio 0.5.
    eo = equalized_odds({"A": 0.5, "B": 1.0}, {"A": 0.5, "B": 2 / 3})
    assert eo == Disparity(pytest.approx(0.5), pytest.approx(0.5))  # type: ignore[arg-type]
    assert eo.difference == pytest.approx(
        equalized_odds_difference(Y_TRUE, Y_PRED, sensitive_features=GROUP)
    )
    assert eo.ratio == pytest.approx(equalized_odds_ratio(Y_TRUE, Y_PRED, sensitive_features=GROUP))
    # Here the FPR decides the ratio: TPR ratio 0.9 / 1.0 = 0.9, FPR ratio 0.2 / 0.4 = 0.5;
    # differences 0.1 and 0.2 -> (0.2, 0.5).
    eo = equalized_odds({"A": 0.9, "B": 1.0}, {"A": 0.2, "B": 0.4})
    assert eo.difference == pytest.approx(0.2)
    assert eo.ratio == pytest.approx(0.5)


def test_three_groups_compare_the_extremes() -> None:
    # Max 0.8, min 0.2: difference 0.6, ratio 0.25; the middle group does not matter.
    d = between_groups({"a": 0.2, "b": 0.5, "c": 0.8})
    assert d.difference == pytest.approx(0.6)
    assert d.ratio == pytest.approx(0.25)


def test_equal_figures_have_ratio_one_even_at_zero() -> None:
    assert between_groups({"a": 0.4, "b": 0.4}) == Disparity(0.0, 1.0)
    assert between_groups({"a": 0.0, "b": 0.0}) == Disparity(0.0, 1.0)
    # One group at zero and one above: ratio 0.
    assert between_groups({"a": 0.0, "b": 0.5}) == Disparity(0.5, 0.0)


def test_nothing_to_compare_is_nan() -> None:
    for figures in ({}, {"a": 0.3}, {"a": 0.3, "b": float("nan")}):
        d = between_groups(figures)
        assert math.isnan(d.difference) and math.isnan(d.ratio)
    # NaN figures are left out: with two finite ones left, they are compared.
    assert between_groups({"a": 0.3, "b": float("nan"), "c": 0.6}) == Disparity(
        pytest.approx(0.3),  # type: ignore[arg-type]
        pytest.approx(0.5),  # type: ignore[arg-type]
    )
    # Equalized odds needs both: a TPR that cannot be compared makes it undefined.
    eo = equalized_odds({"a": float("nan"), "b": 1.0}, {"a": 0.2, "b": 0.4})
    assert math.isnan(eo.difference) and math.isnan(eo.ratio)
