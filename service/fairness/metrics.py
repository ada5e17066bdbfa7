"""Per-group metric functions in the form Fairlearn's ``MetricFrame`` calls them.

Each takes ``(y_true, y_pred, **sample_params)``: labels and predictions are class indices into
the manifest's ``classes`` (a label outside them is -1 and counts as wrong, as in
:mod:`service.uncertainty.calibration`), sample parameters are arrays with one entry per row.
A row-wise matrix (probabilities [N, C], prediction sets [N, C]) may also come as an object array
of rows (:func:`per_row`), the form ``MetricFrame`` can split by group. A figure of no rows, or
one whose denominator is empty (TPR of a group without positives), is NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from service.uncertainty.calibration import expected_calibration_error

#: Index of the positive class of a binary target: the manifest's ``classes[1]``.
POSITIVE_CLASS = 1

#: A per-group metric: ``metric(y_true, y_pred, **sample_params) -> float``.
MetricFunction = Callable[..., float]


def per_row(matrix: ArrayLike) -> NDArray[np.object_]:
    """A [N, C] matrix as an object array of N rows, which ``MetricFrame`` splits by group."""
    m = np.asarray(matrix)
    rows = np.empty(len(m), dtype=object)
    rows[:] = list(m)
    return rows


def _matrix(values: ArrayLike) -> NDArray[np.generic]:
    array = np.asarray(values)
    if array.dtype == object:
        return np.stack(list(array)) if len(array) else array.reshape(0, 0)
    return array


def _labels(values: ArrayLike) -> NDArray[np.int64]:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def _mean(values: NDArray[np.bool_] | NDArray[np.number[Any]]) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Share of rows whose prediction is the label."""
    return _mean(_labels(y_true) == _labels(y_pred))


def selection_rate_for(label: int) -> MetricFunction:
    """Metric ``selection_rate_<label>``: share of rows predicted as class index ``label``."""

    def selection_rate(y_true: ArrayLike, y_pred: ArrayLike) -> float:
        return _mean(_labels(y_pred) == label)

    selection_rate.__name__ = f"selection_rate_{label}"
    selection_rate.__doc__ = f"Share of rows predicted as class index {label}."
    return selection_rate


def true_positive_rate(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Binary: share of positive rows (label POSITIVE_CLASS) predicted positive."""
    truth, predicted = _labels(y_true), _labels(y_pred)
    return _mean(predicted[truth == POSITIVE_CLASS] == POSITIVE_CLASS)


def false_positive_rate(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Binary: share of the other rows (any label but POSITIVE_CLASS) predicted positive."""
    truth, predicted = _labels(y_true), _labels(y_pred)
    return _mean(predicted[truth != POSITIVE_CLASS] == POSITIVE_CLASS)


def ece(y_true: ArrayLike, y_pred: ArrayLike, *, probabilities: ArrayLike) -> float:
    """Top-label ECE of the rows' mean probabilities [N, C] (the card's and drift job's ECE)."""
    truth = _labels(y_true)
    if truth.size == 0:
        return float("nan")
    return expected_calibration_error(_matrix(probabilities).astype(np.float64), truth)


def conformal_coverage(
    y_true: ArrayLike, y_pred: ArrayLike, *, prediction_sets: ArrayLike
) -> float:
    """Share of rows whose label is in their prediction set ([N, C] booleans)."""
    truth = _labels(y_true)
    sets = _matrix(prediction_sets).astype(bool)
    if truth.size == 0:
        return float("nan")
    known = (truth >= 0) & (truth < sets.shape[1])
    covered = np.zeros(truth.size, dtype=bool)
    covered[known] = sets[np.flatnonzero(known), truth[known]]
    return _mean(covered)


def mean_set_size(y_true: ArrayLike, y_pred: ArrayLike, *, prediction_sets: ArrayLike) -> float:
    """Mean number of classes per prediction set ([N, C] booleans)."""
    sets = _matrix(prediction_sets).astype(bool)
    return _mean(sets.sum(axis=1)) if sets.size else float("nan")


def mean_interval_width(
    y_true: ArrayLike, y_pred: ArrayLike, *, interval_width: ArrayLike
) -> float:
    """Mean of the rows' interval widths (one per row: the predicted class's upper - lower)."""
    return _mean(np.asarray(interval_width, dtype=np.float64).reshape(-1))
