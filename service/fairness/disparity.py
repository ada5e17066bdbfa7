"""Disparities between groups from per-group figures, as Fairlearn defines them.

``difference`` is the largest figure minus the smallest; ``ratio`` the smallest over the largest
(1 when every group has the same figure, zero included). Demographic parity compares selection
rates; equalized odds takes the worse of the TPR and the FPR disparity (the larger difference, the
smaller ratio). Pass only the groups that are measured: too-small groups are listed, not compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Disparity:
    """Between-group difference (max - min) and ratio (min / max) of one figure."""

    difference: float
    ratio: float


_UNDEFINED = Disparity(float("nan"), float("nan"))


def between_groups(figures: Mapping[str, float]) -> Disparity:
    """Difference and ratio of non-negative per-group figures; NaN figures are left out.

    Fewer than two finite figures: both NaN (there is nothing to compare).
    """
    finite = [v for v in figures.values() if math.isfinite(v)]
    if len(finite) < 2:
        return _UNDEFINED
    low, high = min(finite), max(finite)
    ratio = 1.0 if high == low else low / high
    return Disparity(high - low, ratio)


def demographic_parity(selection_rates: Mapping[str, float]) -> Disparity:
    """Demographic-parity difference and ratio: of the groups' selection rates of one class."""
    return between_groups(selection_rates)


def equalized_odds(
    true_positive_rates: Mapping[str, float], false_positive_rates: Mapping[str, float]
) -> Disparity:
    """Equalized-odds difference (larger of TPR, FPR differences) and ratio (smaller of ratios).

    NaN when either the TPR or the FPR disparity is undefined.
    """
    tpr = between_groups(true_positive_rates)
    fpr = between_groups(false_positive_rates)
    if any(math.isnan(v) for v in (tpr.difference, fpr.difference)):
        return _UNDEFINED
    return Disparity(max(tpr.difference, fpr.difference), min(tpr.ratio, fpr.ratio))
