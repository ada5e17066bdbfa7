"""Confidence intervals for P(y = c | x) from the spread of bootstrap ensemble members.

Each member is fitted on its own bootstrap resample, so the members' spread estimates how far the
fitted probability would move with other training data. The interval is built in logit space,
``mean_logit +- t * sd_logit`` with ``t`` the Student quantile at K-1 degrees of freedom (the spread
is itself estimated from K members), and mapped back through the sigmoid so it stays in (0, 1).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy.special import stdtrit

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
    # scipy.special, not scipy.stats: the same quantile, and serving does not pay ~60 MiB
    # of scipy.stats imports for it.
    return float(stdtrit(members - 1, 0.5 + level / 2.0))


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
