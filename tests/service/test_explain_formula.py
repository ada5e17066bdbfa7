"""Explanation formulas pinned by hand-computed cases: weights, attributions, intervals, shape."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
from numpy.typing import NDArray

from service.explain import (
    Background,
    InstanceExplanation,
    background_from_columns,
    encode_explanation,
    exact_plan,
    explain_rows,
    global_importance,
    permutation_plan,
    shapley_weight,
)

Columns = Mapping[str, NDArray[np.generic]]
NAMES = ["x1", "x2", "x3"]
CLASSES = ["no", "yes"]

# Two members, each linear in the three features for class "yes" ("no" is 1 - "yes"):
#   member 1: p = 0.5 + 0.1 x1 + 0.05 x2 + 0.2 x3
#   member 2: p = 0.3 + 0.2 x1 - 0.05 x2 + 0.1 x3
INTERCEPT = np.array([0.5, 0.3])
SLOPES = np.array([[0.1, 0.05, 0.2], [0.2, -0.05, 0.1]])  # [K, F]


def linear_members(columns: Columns) -> NDArray[np.float32]:
    """The two linear members above as member probabilities [N, 2, 2]."""
    x = np.concatenate([np.asarray(columns[n], dtype=np.float64) for n in NAMES], axis=1)
    yes = INTERCEPT[None, :] + x @ SLOPES.T  # [N, K]
    return np.stack([1.0 - yes, yes], axis=2).astype(np.float32)


def float_columns(rows: list[list[float]], names: list[str]) -> dict[str, NDArray[np.generic]]:
    """Graph columns (feature -> float32 [N, 1]) of row-wise values."""
    block = np.array(rows, dtype=np.float32)
    return {n: block[:, i : i + 1] for i, n in enumerate(names)}


def linear_background() -> Background:
    # Two background rows, (0, 0, 0) and (2, 4, -2): feature means (1, 2, -1).
    return background_from_columns(float_columns([[0, 0, 0], [2, 4, -2]], NAMES), linear_members)


def explain_linear(rows: list[list[float]], level: float) -> list[InstanceExplanation]:
    return explain_rows(
        linear_members,
        NAMES,
        CLASSES,
        float_columns(rows, NAMES),
        linear_background(),
        level=level,
        plan=exact_plan(3),
    )


def test_shapley_weights_of_three_features() -> None:
    # |S|!(F-|S|-1)!/F! with F = 3: 0!2!/3! = 1/3, 1!1!/3! = 1/6, 2!0!/3! = 1/3.
    assert shapley_weight(0, 3) == pytest.approx(1 / 3)
    assert shapley_weight(1, 3) == pytest.approx(1 / 6)
    assert shapley_weight(2, 3) == pytest.approx(1 / 3)


def test_linear_members_by_hand() -> None:
    # Instance (3, 1, -1); background means (1, 2, -1), so x - mean = (2, -1, 0).
    # A linear member's interventional Shapley value is slope * (x - mean):
    #   member 1: (0.1 * 2, 0.05 * -1, 0.2 * 0) = (0.2, -0.05, 0)
    #   member 2: (0.2 * 2, -0.05 * -1, 0.1 * 0) = (0.4, 0.05, 0)
    # Attribution (members' mean) for "yes": (0.3, 0, 0); "no" is its negative.
    # Members' sd (ddof=1, two values: |a - b| / sqrt 2): (0.2/sqrt2, 0.1/sqrt2, 0).
    # Level 0.5 at K - 1 = 1 degree of freedom: t = tan(pi/4) = 1 (Cauchy's quartile), so the
    # interval is mean +- sd: x1 in 0.3 +- 0.141421356..., x2 in 0 +- 0.0707106781...
    # Base values: member 1: 0.5 + 0.1*1 + 0.05*2 + 0.2*-1 = 0.5; member 2: 0.3 + 0.2 - 0.1
    # - 0.1 = 0.3; served "yes" 0.4, "no" 0.6. Prediction: member 1 0.5 + 0.3 + 0.05 - 0.2 =
    # 0.65, member 2 0.3 + 0.6 - 0.05 - 0.1 = 0.75; served "yes" 0.7: the label is "yes", and
    # the attributions (0.3) add up to 0.7 - 0.4.
    (e,) = explain_linear([[3, 1, -1]], level=0.5)
    half = math.sqrt(2) / 10
    yes = 1
    assert e.label == "yes"
    assert e.method == "exact"
    np.testing.assert_allclose(e.base_values, [0.6, 0.4], atol=1e-7)
    np.testing.assert_allclose(e.prediction, [0.3, 0.7], atol=1e-7)
    np.testing.assert_allclose(e.attributions[:, yes], [0.3, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(e.attributions[:, 0], [-0.3, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(e.lower[:, yes], [0.3 - half, -half / 2, 0.0], atol=1e-7)
    np.testing.assert_allclose(e.upper[:, yes], [0.3 + half, half / 2, 0.0], atol=1e-7)
    np.testing.assert_allclose(
        e.member_attributions[:, :, yes], [[0.2, 0.4], [-0.05, 0.05], [0.0, 0.0]], atol=1e-7
    )
    np.testing.assert_allclose(e.additivity_error, [0.0, 0.0], atol=1e-7)


def test_interval_uses_the_student_quantile_at_the_level() -> None:
    # Level 0.9 at 1 degree of freedom: t = tan(pi * 0.45) = 6.313751514675...; x1's sd is
    # 0.2/sqrt 2, so its half-width is 6.3137515 * 0.1414213562 = 0.8928987...
    (e,) = explain_linear([[3, 1, -1]], level=0.9)
    half = math.tan(math.pi * 0.45) * 0.2 / math.sqrt(2)
    assert half == pytest.approx(0.89290, abs=1e-5)
    assert e.upper[0, 1] - e.attributions[0, 1] == pytest.approx(half, abs=1e-6)
    assert e.attributions[0, 1] - e.lower[0, 1] == pytest.approx(half, abs=1e-6)


def interaction(columns: Columns) -> NDArray[np.float32]:
    """One member (twice, so K = 2) of f(x) = x1 + x1 * x2 for class "yes", 0 for "no"."""
    x1 = np.asarray(columns["x1"], dtype=np.float64)[:, 0]
    x2 = np.asarray(columns["x2"], dtype=np.float64)[:, 0]
    yes = x1 + x1 * x2
    member = np.stack([np.zeros_like(yes), yes], axis=1)
    return np.stack([member, member], axis=1).astype(np.float32)


@pytest.mark.parametrize("plan", [exact_plan(2), permutation_plan(2, 2, 1, seed=5)])
def test_interaction_split_by_hand(plan: object) -> None:
    # x = (2, 3), background the single row (0, 0): v(none) = 0, v({1}) = 2 + 0 = 2,
    # v({2}) = 0, v({1,2}) = 2 + 6 = 8. Shapley with weights 1/2, 1/2:
    #   phi1 = ((v1 - v0) + (v12 - v2)) / 2 = (2 + 8) / 2 = 5
    #   phi2 = ((v2 - v0) + (v12 - v1)) / 2 = (0 + 6) / 2 = 3
    # With two features an order and its reverse are all the orders there are, so one
    # antithetic pair of permutations gives the exact values too.
    names = ["x1", "x2"]
    background = background_from_columns(float_columns([[0, 0]], names), interaction)
    (e,) = explain_rows(
        interaction,
        names,
        CLASSES,
        float_columns([[2, 3]], names),
        background,
        level=0.95,
        plan=plan,  # type: ignore[arg-type]
    )
    np.testing.assert_allclose(e.attributions[:, 1], [5.0, 3.0], atol=1e-9)
    np.testing.assert_allclose(e.base_values, [0.0, 0.0], atol=1e-9)
    # Identical members: no spread, so the interval is the point.
    np.testing.assert_allclose(e.lower, e.attributions, atol=1e-9)
    np.testing.assert_allclose(e.upper, e.attributions, atol=1e-9)


def triple(columns: Columns) -> NDArray[np.float32]:
    """f(x) = x1 * x2 * x3 + x1 for class "yes" (two identical members)."""
    x = np.concatenate([np.asarray(columns[n], dtype=np.float64) for n in NAMES], axis=1)
    yes = x[:, 0] * x[:, 1] * x[:, 2] + x[:, 0]
    member = np.stack([np.zeros_like(yes), yes], axis=1)
    return np.stack([member, member], axis=1).astype(np.float32)


def test_three_way_interaction_by_hand() -> None:
    # x = (1, 2, 3), background (0, 0, 0): the product (6) is only whole when all three are in,
    # so each feature gets weight w(2) = 1/3 of it; x1's own term (1) is x1's alone.
    # phi = (6/3 + 1, 6/3, 6/3) = (3, 2, 2).
    background = background_from_columns(float_columns([[0, 0, 0]], NAMES), triple)
    (e,) = explain_rows(
        triple,
        NAMES,
        CLASSES,
        float_columns([[1, 2, 3]], NAMES),
        background,
        level=0.95,
        plan=exact_plan(3),
    )
    np.testing.assert_allclose(e.attributions[:, 1], [3.0, 2.0, 2.0], atol=1e-9)


def test_permutation_plan_pairs_each_order_with_its_reverse() -> None:
    plan = permutation_plan(5, 6, 4, seed=1)
    assert plan.orders.shape == (6, 4, 5)
    np.testing.assert_array_equal(plan.orders[1::2], plan.orders[0::2, :, ::-1])
    # Each background row draws its own orders, and each is a permutation.
    assert len({tuple(order) for order in plan.orders[0]}) > 1
    np.testing.assert_array_equal(
        np.sort(plan.orders, axis=2), np.broadcast_to(range(5), (6, 4, 5))
    )
    again = permutation_plan(5, 6, 4, seed=1)
    np.testing.assert_array_equal(plan.orders, again.orders)
    assert plan.method == "permutation(n=6)"
    with pytest.raises(ValueError, match="even number"):
        permutation_plan(5, 3, 4, seed=1)


def test_global_importance_by_hand() -> None:
    # Rows (3, 1, -1) and (0, 4, 0); x - mean = (2, -1, 0) and (-1, 2, 1).
    # Member attributions for "yes" (slope * (x - mean)):
    #   row a: member 1 (0.2, -0.05, 0),   member 2 (0.4, 0.05, 0);   served (0.3, 0, 0)
    #   row b: member 1 (-0.1, 0.1, 0.2),  member 2 (-0.2, -0.1, 0.1); served (-0.15, 0, 0.15)
    # Served importance, mean |served| over the rows: (0.225, 0, 0.075).
    # Each member's mean |attribution|: member 1 (0.15, 0.075, 0.1), member 2 (0.3, 0.075, 0.05);
    # their sd: (0.15/sqrt2, 0, 0.05/sqrt2) = (0.1060660..., 0, 0.0353553...). t = 1 at level 0.5.
    explanations = explain_linear([[3, 1, -1], [0, 4, 0]], level=0.5)
    result = global_importance(explanations, level=0.5)
    yes = 1
    np.testing.assert_allclose(result.importance[:, yes], [0.225, 0.0, 0.075], atol=1e-7)
    np.testing.assert_allclose(
        result.lower[:, yes],
        [0.225 - 0.15 / math.sqrt(2), 0.0, 0.075 - 0.05 / math.sqrt(2)],
        atol=1e-7,
    )
    np.testing.assert_allclose(
        result.upper[:, yes],
        [0.225 + 0.15 / math.sqrt(2), 0.0, 0.075 + 0.05 / math.sqrt(2)],
        atol=1e-7,
    )
    assert result.rows == 2
    assert result.order(yes) == [0, 2, 1]


def test_encoded_shape() -> None:
    (e,) = explain_linear([[3, 1, -1]], level=0.5)
    encoded = encode_explanation(e, NAMES, CLASSES)
    assert set(encoded) == {"label", "base_values", "attributions", "method", "additivity_error"}
    assert encoded["label"] == "yes"
    assert encoded["method"] == "exact"
    assert encoded["base_values"] == pytest.approx({"no": 0.6, "yes": 0.4}, abs=1e-7)
    assert set(encoded["attributions"]) == set(NAMES)
    x1_yes = encoded["attributions"]["x1"]["yes"]
    assert x1_yes == pytest.approx(
        {"value": 0.3, "lower": 0.3 - math.sqrt(2) / 10, "upper": 0.3 + math.sqrt(2) / 10},
        abs=1e-7,
    )
    assert all(type(v) is float for v in encoded["additivity_error"].values())
    assert all(
        type(bound) is float
        for per_class in encoded["attributions"].values()
        for cell in per_class.values()
        for bound in cell.values()
    )
