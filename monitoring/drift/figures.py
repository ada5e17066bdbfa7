"""Model-health figures of a window: label-free estimate, realized accuracy, calibration.

``estimated_accuracy`` is the mean top-class probability: the expected accuracy when the served
probabilities are calibrated, so it needs no labels (docs/architecture.md, Monitoring).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from service.uncertainty import expected_calibration_error


def estimated_accuracy(probabilities: NDArray[np.floating]) -> float:
    """Mean over rows of the top-class probability."""
    return float(np.mean(np.asarray(probabilities, dtype=np.float64).max(axis=1)))


@dataclass(frozen=True)
class Feedback:
    """Accuracy and calibration on the rows that have a ground-truth label."""

    labelled_rows: int
    realized_accuracy: float | None
    expected_calibration_error: float | None


def feedback_figures(
    predicted: pd.Series,
    true_label: pd.Series,
    probabilities: NDArray[np.floating],
    classes: list[str],
    min_labelled_rows: int,
) -> Feedback:
    """Realized accuracy of the logged labels; ECE when at least ``min_labelled_rows`` rows."""
    labelled = true_label.notna().to_numpy()
    n = int(labelled.sum())
    if n == 0:
        return Feedback(0, None, None)
    truth = true_label[labelled].astype(str).to_numpy()
    accuracy = float(np.mean(predicted[labelled].astype(str).to_numpy() == truth))
    ece = None
    if n >= min_labelled_rows:
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index.get(t, -1) for t in truth], dtype=np.int64)
        ece = expected_calibration_error(probabilities[labelled], labels)
    return Feedback(n, accuracy, ece)


def finite_mean(values: pd.Series) -> float | None:
    """Mean of the finite values; None when there is none (JSON has no NaN)."""
    array = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    array = array[np.isfinite(array)]
    return float(array.mean()) if len(array) else None


def ambiguous_share(set_size: pd.Series) -> float | None:
    """Share of prediction sets holding more than one class; None when no set size is known."""
    array = pd.to_numeric(set_size, errors="coerce").to_numpy(dtype=np.float64)
    array = array[np.isfinite(array)]
    return float(np.mean(array > 1)) if len(array) else None
