"""Confidence intervals for P(y = c | x) from the spread of bootstrap ensemble members.

Each member is fitted on its own bootstrap resample, so the members' spread estimates how far the
fitted probability would move with other training data. The interval is built in logit space,
``mean_logit +- t * sd_logit`` with ``t`` the Student quantile at K-1 degrees of freedom (the spread
is itself estimated from K members), and mapped back through the sigmoid so it stays in (0, 1).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

# Probabilities are clipped before the logit so a saturated member cannot produce +-inf.
_EPS = 1e-7

FloatArray = NDArray[np.floating]


def ensemble_mean(member_probabilities: FloatArray) -> NDArray[np.float64]:
    """Mean of calibrated member probabilities, [N, K, C] -> [N, C]."""
    mean: NDArray[np.float64] = np.asarray(member_probabilities, dtype=np.float64).mean(axis=1)
    return mean


@lru_cache(maxsize=256)
def student_t_quantile(level: float, members: int) -> float:
    """Two-sided Student t quantile for ``level`` with ``members - 1`` degrees of freedom."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    if members < 2:
        raise ValueError(f"an interval needs at least 2 members, got {members}")
    # Solved here rather than with scipy.special.stdtrit: importing scipy.special (it pulls in
    # numpy.testing and numpy.f2py) was a third of the server's start-up CPU, for one scalar
    # per level. The degrees of freedom are an integer, so P(|T| <= t) has a closed form in
    # theta = atan(t / sqrt(df)) (Abramowitz & Stegun 26.7.3-4), increasing in theta:
    # bisect it. Within ~3e-13 of the exact quantile (stdtrit: ~5e-11); see the contract tests.
    df = members - 1
    lo, hi = 0.0, math.pi / 2.0
    while True:
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:  # the bracket cannot shrink further in float64
            break
        if _t_two_sided_cdf(mid, df) < level:
            lo = mid
        else:
            hi = mid
    return math.sqrt(df) * math.tan(0.5 * (lo + hi))


def _t_two_sided_cdf(theta: float, df: int) -> float:
    """P(|T| <= sqrt(df) * tan(theta)) for Student's t with integer ``df`` >= 1."""
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:
        # sin(theta) * (1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ... up to cos^(df-2))
        term = total = 1.0
        for j in range(1, df // 2):
            term *= cos2 * (2 * j - 1) / (2 * j)
            total += term
        return sin * total
    # (2/pi) * (theta + sin(theta) * (cos + 2/3 cos^3 + ... up to cos^(df-2))); df = 1: 2 theta/pi
    cos = math.cos(theta)
    total = 0.0
    if df > 1:
        term = total = cos
        for j in range(1, (df - 1) // 2):
            term *= cos2 * (2 * j) / (2 * j + 1)
            total += term
    return 2.0 / math.pi * (theta + sin * total)


def logit_intervals(
    member_probabilities: FloatArray, level: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lower and upper bounds [N, C] of the ``level`` interval for every class probability.

    The bounds are widened where needed to contain the ensemble mean probability, so a reported
    probability never falls outside its own interval.
    """
    raw = np.asarray(member_probabilities, dtype=np.float64)
    p = np.clip(raw, _EPS, 1.0 - _EPS)
    members = p.shape[1]
    logits = np.log(p) - np.log1p(-p)
    centre = logits.mean(axis=1)
    spread = logits.std(axis=1, ddof=1)
    half = student_t_quantile(level, members) * spread
    # tanh saturates to exactly 0 or 1 in float64 for wide intervals; keep the bounds inside.
    lower = np.clip(_sigmoid(centre - half), _EPS, 1.0 - _EPS)
    upper = np.clip(_sigmoid(centre + half), _EPS, 1.0 - _EPS)
    # Contain the probability as reported (the mean of the unclipped members): a class below
    # the clip (1e-8, say) would otherwise sit outside its own interval [1e-7, ...].
    mean = raw.mean(axis=1)
    return np.minimum(lower, mean), np.maximum(upper, mean)


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * x))
    return out
