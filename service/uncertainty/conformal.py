"""Split-conformal prediction sets with the LAC score (1 - probability of the true class).

With ``n`` exchangeable calibration scores, the set ``{c : 1 - p_c <= q}`` where ``q`` is the
``ceil((n + 1) * level)``-th smallest score covers the true class with probability at least
``level`` (Vovk et al.; Sadinle, Lei & Wasserman 2019).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


def conformal_scores(
    mean_probabilities: NDArray[np.floating], labels: NDArray[np.integer]
) -> NDArray[np.float64]:
    """LAC non-conformity scores ``1 - p(true class)`` for labelled rows, sorted ascending."""
    p = np.asarray(mean_probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    scores = 1.0 - p[np.arange(len(y)), y]
    return np.sort(scores)


def conformal_threshold(
    sorted_scores: Sequence[float] | NDArray[np.floating], level: float
) -> float:
    """Score threshold for a ``level`` set; ``inf`` (every class) when n is too small for it."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    n = len(sorted_scores)
    rank = math.ceil((n + 1) * level)
    if rank > n:
        return math.inf
    return float(sorted_scores[rank - 1])


def prediction_sets(
    mean_probabilities: NDArray[np.floating], threshold: float
) -> NDArray[np.bool_]:
    """Boolean membership [N, C]: classes whose score is within the threshold.

    The most probable class is always included: a superset keeps the coverage guarantee and an
    empty set tells a caller nothing.
    """
    p = np.asarray(mean_probabilities, dtype=np.float64)
    members = (1.0 - p) <= threshold
    members[np.arange(p.shape[0]), p.argmax(axis=1)] = True
    return members
