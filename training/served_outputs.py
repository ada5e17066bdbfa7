"""The served figures training records, from service.uncertainty.served.

Shared by the drift reference (reference.parquet's output columns) and the model card's fairness
slices, so both describe the same served figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.uncertainty import served


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
    conformal set, all at ``level``, as the service computes them."""
    out = served(member_probabilities, level, conformal_scores)
    predicted = out.label_index.astype(np.int64)
    width = (out.upper - out.lower)[np.arange(len(predicted)), predicted]
    return ServedOutputs(out.probabilities, predicted, width, out.sets)
