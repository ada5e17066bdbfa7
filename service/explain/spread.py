"""Intervals from the ensemble members' spread, for quantities that are additive in probability.

The service's probability intervals (service/uncertainty/intervals.py) read the members' spread
as the sampling variability of the fitted model: each member is fitted on its own bootstrap
resample, so their standard deviation estimates how far the fitted value would move with other
training data, and the interval is ``centre +- t_{K-1} * sd`` (sd with ddof=1, t the two-sided
Student quantile at K-1 degrees of freedom, no division by sqrt(K)). Attributions use the same
rule on the same members, so an attribution's interval and its probability's interval mean the
same thing. Unlike probabilities, attributions are signed differences that add up to the
prediction minus the base value, so the interval is built on them directly (a logit has no
meaning here) and centred on the members' mean, which is the reported value.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from service.uncertainty import student_t_quantile


def member_interval(
    values: NDArray[np.floating], level: float, *, axis: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Mean over the members' ``axis`` and its ``level`` interval: mean +- t_{K-1} * sd."""
    raw = np.asarray(values, dtype=np.float64)
    members = raw.shape[axis]
    mean = raw.mean(axis=axis)
    half = student_t_quantile(level, members) * raw.std(axis=axis, ddof=1)
    return mean, mean - half, mean + half
