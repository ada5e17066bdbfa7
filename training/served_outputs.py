"""What the service answers for rows at one level, computed from member probabilities [N, K, C].

Shared by the drift reference (reference.parquet's output columns) and the model card's fairness
slices, so both describe the same served figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.uncertainty import (
    conformal_threshold,
    ensemble_mean,
    logit_intervals,
    prediction_sets,
)


@dataclass(frozen=True)
class ServedOutputs:
    """Per row: mean probabilities [N, C], predicted class, its interval width, the set [N, C]."""

    mean: NDArray[np.float64]
    predicted: NDArray[np.int64]
    interval_width: NDArray[np.float64]
    sets: NDArray[np.bool_]


def served_outputs(
    member_probabilities: NDArray[np.floating],
    conformal_scores: NDArray[np.floating],
    level: float,
) -> ServedOutputs:
    """The served mean, predicted class, width of the predicted class's interval and the
    conformal set, all at ``level``."""
    mean = ensemble_mean(member_probabilities)
    lower, upper = logit_intervals(member_probabilities, level, mean=mean)
    predicted = mean.argmax(axis=1).astype(np.int64)
    width = (upper - lower)[np.arange(len(predicted)), predicted]
    sets = prediction_sets(mean, conformal_threshold(conformal_scores, level))
    return ServedOutputs(mean, predicted, width, sets)
