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


# The hot path calls ufuncs directly: ndarray.mean/std/clip go through numpy's Python-level
# wrappers, which cost more than the arithmetic on a batch-1 request (90 -> 41 us for mean and
# intervals of one row). The operations are numpy's own, in its order, so results are identical.
_sum = np.add.reduce
_minimum = np.minimum
_maximum = np.maximum


def ensemble_mean(member_probabilities: FloatArray) -> NDArray[np.float64]:
    """Mean of calibrated member probabilities, [N, K, C] -> [N, C]."""
    raw = np.asarray(member_probabilities, dtype=np.float64)
    mean: NDArray[np.float64] = np.true_divide(_sum(raw, axis=1), raw.shape[1])
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
    member_probabilities: FloatArray, level: float, *, mean: NDArray[np.float64] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lower and upper bounds [N, C] of the ``level`` interval for every class probability.

    The bounds are widened where needed to contain the ensemble mean probability (``mean``, if
    the caller has it: :func:`ensemble_mean` of the same members), so a reported probability
    never falls outside its own interval.
    """
    raw = np.asarray(member_probabilities, dtype=np.float64)
    members = raw.shape[1]
    p = _minimum(_maximum(raw, _EPS), 1.0 - _EPS)
    logits = np.log(p)
    logits -= np.log1p(-p)
    centre = np.true_divide(_sum(logits, axis=1), members)
    # The sample standard deviation (ddof=1), as ndarray.std computes it.
    deviation = logits - centre[:, None, :]
    deviation *= deviation
    spread = np.sqrt(np.true_divide(_sum(deviation, axis=1), members - 1))
    half = student_t_quantile(level, members) * spread
    # tanh saturates to exactly 0 or 1 in float64 for wide intervals; keep the bounds inside.
    lower = _minimum(_maximum(_sigmoid(centre - half), _EPS), 1.0 - _EPS)
    upper = _minimum(_maximum(_sigmoid(centre + half), _EPS), 1.0 - _EPS)
    # Contain the probability as reported (the mean of the unclipped members): a class below
    # the clip (1e-8, say) would otherwise sit outside its own interval [1e-7, ...].
    if mean is None:
        mean = ensemble_mean(raw)
    return _minimum(lower, mean), _maximum(upper, mean)


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * x))
    return out
