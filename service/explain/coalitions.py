"""Which coalitions to evaluate and how their values combine into Shapley values.

Exact: every coalition (a boolean mask over the features) and a matrix ``weights`` with
``phi = weights @ v``, ``v`` the value of each coalition averaged over the background. Sampled:
feature orders per background row, whose marginal contributions are averaged. Both add up to
the prediction minus the base value exactly, whatever the sample of orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Up to this many features every coalition is enumerated (2^10 = 1024 coalitions).
MAX_EXACT_FEATURES = 10


@dataclass(frozen=True)
class CoalitionPlan:
    """Every coalition and the linear map from their values to the exact attributions."""

    masks: NDArray[np.bool_]  # [M, F]: True where the instance's value is used
    weights: NDArray[np.float64]  # [F, M]
    method: str  # "exact" or "permutation(n=...)"


def shapley_weight(size: int, features: int) -> float:
    """|S|!(F-|S|-1)!/F!: the weight of coalition S (of ``size``) in feature i's marginal sum."""
    return math.factorial(size) * math.factorial(features - size - 1) / math.factorial(features)


def exact_plan(features: int) -> CoalitionPlan:
    """Every coalition of ``features`` features with the exact Shapley weights."""
    if not 1 <= features <= MAX_EXACT_FEATURES:
        raise ValueError(
            f"exact enumeration takes 1 to {MAX_EXACT_FEATURES} features, got {features}"
        )
    codes = np.arange(1 << features)
    masks = ((codes[:, None] >> np.arange(features)) & 1).astype(bool)
    sizes = masks.sum(axis=1)
    w = np.array([shapley_weight(s, features) for s in range(features)] + [0.0])
    # Feature i gains v(S) with weight w(|S|-1) where S holds i, and loses v(S) with weight
    # w(|S|) where it does not: the marginal sum over S (without i) of w(|S|)(v(S+i) - v(S)).
    weights = np.where(masks.T, w[np.maximum(sizes - 1, 0)], -w[sizes])
    return CoalitionPlan(masks, weights, "exact")


@dataclass(frozen=True)
class PermutationPlan:
    """Sampled feature orders, ``permutations`` of them for every background row.

    ``orders[p, b]`` is the order in which features switch from background row b's values to
    the instance's; ``rank`` is its inverse (the step at which each feature switches).
    """

    orders: NDArray[np.intp]  # [P, B, F]
    rank: NDArray[np.intp]  # [P, B, F]
    method: str  # "permutation(n=P)"

    @property
    def permutations(self) -> int:
        """Orders per background row (P)."""
        return int(self.orders.shape[0])


def permutation_plan(
    features: int, permutations: int, background_rows: int, seed: int
) -> PermutationPlan:
    """``permutations`` orders per background row, seeded, each drawn one followed by its reverse.

    Interventional Shapley values average the single-row game of every background row, so every
    row draws orders of its own rather than sharing them: the same model rows then sample B
    times as many orders, which divides the sampling variance by up to B. Pairing an order with
    its reverse (antithetic sampling) cancels the part of the error that is linear in a
    feature's position, most of it for nearly additive models. Each order's marginal
    contributions add up to f(x) - f(b), so the estimate is exactly additive.
    """
    if features < 1 or background_rows < 1:
        raise ValueError(
            "a permutation plan needs at least 1 feature and 1 background row, got "
            f"{features} and {background_rows}"
        )
    if permutations < 2 or permutations % 2:
        raise ValueError(
            f"permutations must be an even number of at least 2 (pairs), got {permutations}"
        )
    rng = np.random.default_rng(seed)
    keys = rng.random((permutations // 2, background_rows, features))
    drawn = np.argsort(keys, axis=2)
    orders = np.empty((permutations, background_rows, features), dtype=np.intp)
    orders[0::2], orders[1::2] = drawn, drawn[:, :, ::-1]
    rank = np.empty_like(orders)
    np.put_along_axis(rank, orders, np.arange(features), axis=2)
    return PermutationPlan(orders, rank, f"permutation(n={permutations})")
