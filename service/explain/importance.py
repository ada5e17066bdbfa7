"""Global importance for the model card: mean |attribution| over rows, with the members' spread."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.explain.result import InstanceExplanation
from service.uncertainty import student_t_quantile


@dataclass(frozen=True)
class GlobalImportance:
    """Per feature and class [F, C]: mean |attribution| over ``rows`` rows and its interval."""

    importance: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    rows: int
    confidence_level: float

    def order(self, class_index: int) -> list[int]:
        """Feature indices by decreasing importance for one class (ties keep feature order)."""
        return [int(i) for i in np.argsort(-self.importance[:, class_index], kind="stable")]


def global_importance(
    explanations: Sequence[InstanceExplanation], level: float
) -> GlobalImportance:
    """Mean |attribution| of the served probability over the explained rows, per feature, class.

    The interval uses the members' spread as the service's intervals do
    (service/explain/spread.py): each member's own mean |attribution| over the same rows, whose
    sample sd gives ``value +- t_{K-1} * sd``. It is centred on the served model's importance
    (the mean of |members' mean|), which is not the members' mean of their own importances.
    """
    if not explanations:
        raise ValueError("global importance needs at least one explained row")
    served = np.stack([e.attributions for e in explanations])  # [N, F, C]
    members = np.stack([e.member_attributions for e in explanations])  # [N, F, K, C]
    value = np.abs(served).mean(axis=0)
    per_member = np.abs(members).mean(axis=0)  # [F, K, C]
    half = student_t_quantile(level, per_member.shape[1]) * per_member.std(axis=1, ddof=1)
    return GlobalImportance(
        importance=value,
        lower=np.maximum(value - half, 0.0),
        upper=value + half,
        rows=len(explanations),
        confidence_level=level,
    )
