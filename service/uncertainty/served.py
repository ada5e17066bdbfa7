"""What the service answers for rows at one level, from member probabilities [N, K, C].

Defined once: the serving batcher derives every answer with it, and training uses it for the
reference's output columns and the model card, so the card describes the figures served.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from service.uncertainty.conformal import conformal_threshold, prediction_sets
from service.uncertainty.intervals import ensemble_mean, logit_intervals


class Served(NamedTuple):
    """Per row: mean probabilities, interval bounds, conformal set [N, C]; predicted class [N]."""

    probabilities: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    sets: NDArray[np.bool_]
    label_index: NDArray[np.intp]


def served(
    member_probabilities: NDArray[np.floating], level: float, conformal_scores: NDArray[np.floating]
) -> Served:
    """The served mean, its ``level`` intervals, the ``level`` conformal sets and the argmax."""
    probabilities = ensemble_mean(member_probabilities)
    lower, upper = logit_intervals(member_probabilities, level, mean=probabilities)
    sets = prediction_sets(probabilities, conformal_threshold(conformal_scores, level))
    return Served(probabilities, lower, upper, sets, probabilities.argmax(axis=1))
