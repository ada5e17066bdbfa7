"""Top-label calibration figures: reliability bins and the expected calibration error.

One definition for the trainer's model card and the drift job, so the bundle's test ECE and a
window's ECE are the same figure. Bins are equal-width over [0, 1] and right-closed: bin k holds
confidences in (k/B, (k+1)/B], confidence 1.0 falls in the last bin, and a confidence exactly on
an edge belongs to the bin below it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Bins of the model card's and the drift job's ECE.
ECE_BINS = 15


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin mean confidence, accuracy and row count (for the reliability diagram)."""

    confidence: NDArray[np.float64]
    accuracy: NDArray[np.float64]
    count: NDArray[np.int64]


def reliability_bins(
    probabilities: NDArray[np.floating], labels: NDArray[np.int64], bins: int = ECE_BINS
) -> ReliabilityBins:
    """Top-label confidence vs accuracy in ``bins`` bins; a label outside the classes (-1)
    counts as a wrong prediction. ValueError for no rows."""
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) == 0:
        raise ValueError("calibration figures of no rows")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    safe = np.maximum(count, 1)
    return ReliabilityBins(
        np.bincount(index, confidence, bins) / safe, np.bincount(index, correct, bins) / safe, count
    )


def expected_calibration_error(
    probabilities: NDArray[np.floating], labels: NDArray[np.int64], bins: int = ECE_BINS
) -> float:
    """Top-label ECE: sum over bins of (rows in bin / N) * |accuracy - mean confidence|."""
    rb = reliability_bins(probabilities, labels, bins)
    return float(np.sum(rb.count * np.abs(rb.accuracy - rb.confidence)) / rb.count.sum())
