"""Percentile bootstrap intervals for a per-group metric, seeded so a report is reproducible."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from service.fairness.metrics import MetricFunction

#: Resamples per interval: the 2.5% and 97.5% percentiles then rest on 25 resamples each.
BOOTSTRAP_RESAMPLES = 1000
#: Level of the reported intervals.
BOOTSTRAP_LEVEL = 0.95


def bootstrap_interval(
    metric: MetricFunction,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    seed: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    **sample_params: ArrayLike,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` over the given rows (one group's rows).

    Each resample draws N rows with replacement (the same rows for labels, predictions and every
    sample parameter); the bounds are the (1-level)/2 and (1+level)/2 percentiles (numpy's linear
    interpolation) of the resampled figures. Resamples whose figure is NaN (a TPR drawn without
    positives) are left out; with no rows or no finite figure the interval is (NaN, NaN).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"bootstrap needs at least one resample, got {resamples}")
    truth, predicted = np.asarray(y_true), np.asarray(y_pred)
    params = {k: np.asarray(v) for k, v in sample_params.items()}
    n = len(truth)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    figures = np.empty(resamples, dtype=np.float64)
    for b in range(resamples):
        rows = rng.integers(0, n, size=n)
        figures[b] = metric(truth[rows], predicted[rows], **{k: v[rows] for k, v in params.items()})
    finite = figures[np.isfinite(figures)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)
