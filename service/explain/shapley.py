"""Interventional Shapley values of the served probability, per ensemble member.

Each member's output gets its own attributions (the coalition values are computed per member
in the same model calls); the reported attribution is their mean, which is the attribution of
the served probability because Shapley values are linear in the explained function, and their
spread gives the interval (see service/explain/spread.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from service.explain.background import Background
from service.explain.coalitions import (
    MAX_EXACT_FEATURES,
    CoalitionPlan,
    PermutationPlan,
    exact_plan,
    permutation_plan,
)
from service.explain.result import InstanceExplanation
from service.explain.spread import member_interval
from service.explain.valuation import (
    DEFAULT_CHUNK_ROWS,
    ModelFunction,
    Stop,
    coalition_values,
    sampled_attributions,
)
from service.uncertainty import ensemble_mean

#: Orders per background row above MAX_EXACT_FEATURES features (8 pairs): 48 ms per instance
#: for the 30-feature demo model with 25 background rows on one core, 94 ms with 50, 186 ms
#: with 100, inside the 250 ms budget (bench/results/explain-cost.md); max error 0.006-0.009
#: against 400 orders there, for attributions up to 0.07.
DEFAULT_PERMUTATIONS = 16


Plan = CoalitionPlan | PermutationPlan


@lru_cache(maxsize=32)
def choose_plan(
    features: int,
    background_rows: int,
    *,
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    max_exact_features: int = MAX_EXACT_FEATURES,
) -> Plan:
    """Exact enumeration up to ``max_exact_features`` features, seeded permutations above."""
    if features <= max_exact_features:
        return exact_plan(features)
    return permutation_plan(features, permutations, background_rows, seed)


def explain_rows(
    run: ModelFunction,
    names: Sequence[str],
    classes: Sequence[str],
    instances: Mapping[str, NDArray[np.generic]],
    background: Background,
    *,
    level: float,
    plan: Plan,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    stop: Stop | None = None,
) -> list[InstanceExplanation]:
    """One explanation per row of ``instances`` (graph input columns, feature -> [N, 1])."""
    own = np.asarray(run(instances), dtype=np.float64)  # [N, K, C]
    if isinstance(plan, CoalitionPlan):
        values = coalition_values(
            run, names, instances, own, background, plan.masks, chunk_rows=chunk_rows, stop=stop
        )  # [N, M, K, C]
        members = np.einsum("fm,nmkc->nfkc", plan.weights, values)
    else:
        if plan.orders.shape[1] != background.rows:
            raise ValueError(
                f"the permutation plan has orders for {plan.orders.shape[1]} background rows, "
                f"the background holds {background.rows}"
            )
        members = sampled_attributions(
            run, names, instances, own, background, plan, chunk_rows=chunk_rows, stop=stop
        )
    predictions = ensemble_mean(own)
    base = background.base_values
    mean, lower, upper = member_interval(members, level, axis=2)
    return [
        InstanceExplanation(
            label=classes[int(np.argmax(predictions[n]))],
            prediction=predictions[n],
            base_values=base,
            attributions=mean[n],
            lower=lower[n],
            upper=upper[n],
            member_attributions=members[n],
            method=plan.method,
            confidence_level=level,
        )
        for n in range(len(predictions))
    ]
