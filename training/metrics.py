"""Test-split figures of a trained bundle: accuracy, ranking, calibration, coverage.

Definitions (stated in the model card too):
- ``brier``: multi-class Brier score, mean over rows of sum over classes of (p_c - 1[y=c])^2
  (for two classes this is twice the positive-class Brier score).
- ``ece``: top-label expected calibration error, 15 equal-width confidence bins.
- ``estimated_accuracy``: the label-free accuracy estimate, the mean top-class probability; it is
  only as good as the calibration (compare with ``accuracy``).
- ``ece_member_temperatures`` / ``ece_uncalibrated`` (and the matching ``accuracy_*`` and
  ``estimated_accuracy_*``): the same figures for the mean of members calibrated one by one
  (schema 1's fit) and of uncalibrated members, so the gain of the mean's temperature is on record.
- ``conformal_coverage_XX`` / ``conformal_set_size_XX``: share of test rows whose true class is in
  the split-conformal set at level XX%, and the mean set size.
- ``true_proba_coverage_XX`` (synthetic only): share of test rows for which the XX% interval of
  EVERY class contains that class's true probability (all classes, the stricter reading);
  ``interval_width_XX``: mean upper - lower over rows and classes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from service.uncertainty import (
    conformal_threshold,
    ensemble_mean,
    expected_calibration_error,
    logit_intervals,
    prediction_sets,
)
from training.calibrate import Calibration, member_probabilities

LEVELS = (0.90, 0.95)
_EPS = 1e-15


def classification_metrics(
    mean: NDArray[np.floating], labels: NDArray[np.int64]
) -> dict[str, float]:
    """Accuracy, macro one-vs-rest ROC AUC, log loss, Brier and ECE of mean probabilities [N, C]."""
    p = np.asarray(mean, dtype=np.float64)
    n, c = p.shape
    onehot = np.eye(c)[labels]
    out = {
        "accuracy": float(np.mean(p.argmax(axis=1) == labels)),
        "log_loss": float(-np.mean(np.log(np.clip(p[np.arange(n), labels], _EPS, 1.0)))),
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
        "ece": expected_calibration_error(p, labels),
        "estimated_accuracy": float(np.mean(p.max(axis=1))),
    }
    present = np.unique(labels)
    if len(present) == c:  # AUC is undefined when a class is absent from the test split
        if c == 2:
            out["roc_auc_macro"] = float(roc_auc_score(labels, p[:, 1]))
        else:
            out["roc_auc_macro"] = float(
                roc_auc_score(
                    labels, p / p.sum(axis=1, keepdims=True), multi_class="ovr", average="macro"
                )
            )
    return out


def conformal_metrics(
    mean: NDArray[np.floating], labels: NDArray[np.int64], sorted_scores: NDArray[np.floating]
) -> dict[str, float]:
    """Coverage and mean size of the split-conformal sets at 90% and 95%."""
    out: dict[str, float] = {}
    for level in LEVELS:
        sets = prediction_sets(mean, conformal_threshold(sorted_scores, level))
        tag = f"{round(level * 100)}"
        out[f"conformal_coverage_{tag}"] = float(np.mean(sets[np.arange(len(labels)), labels]))
        out[f"conformal_set_size_{tag}"] = float(np.mean(sets.sum(axis=1)))
    return out


def interval_metrics(
    member_probabilities: NDArray[np.floating], true_probabilities: NDArray[np.floating] | None
) -> dict[str, float]:
    """Mean interval width at 90%/95%; with the truth, the share of rows covered for all classes."""
    out: dict[str, float] = {}
    for level in LEVELS:
        lower, upper = logit_intervals(member_probabilities, level)
        tag = f"{round(level * 100)}"
        out[f"interval_width_{tag}"] = float(np.mean(upper - lower))
        if true_probabilities is not None:
            t = np.asarray(true_probabilities, dtype=np.float64)
            inside = (lower <= t) & (t <= upper)
            out[f"true_proba_coverage_{tag}"] = float(np.mean(inside.all(axis=1)))
            predicted = np.asarray(member_probabilities).mean(axis=1).argmax(axis=1)
            rows = np.arange(len(t))
            out[f"true_proba_coverage_predicted_{tag}"] = float(np.mean(inside[rows, predicted]))
    return out


def evaluate(
    member_probabilities: NDArray[np.floating],
    labels: NDArray[np.int64],
    sorted_scores: NDArray[np.floating],
    true_probabilities: NDArray[np.floating] | None = None,
) -> dict[str, float]:
    """Every headline figure for the test split, from calibrated member probabilities [N, K, C]."""
    mean = ensemble_mean(member_probabilities)
    return {
        **classification_metrics(mean, labels),
        **conformal_metrics(mean, labels, sorted_scores),
        **interval_metrics(member_probabilities, true_probabilities),
        "test_rows": float(len(labels)),
    }


def calibration_figures(
    logits: NDArray[np.floating], labels: NDArray[np.int64], calibration: Calibration
) -> dict[str, float]:
    """The mean's ECE, accuracy and estimated accuracy before and after the mean's temperature.

    ``logits`` are the test split's member logits [N, K, C]. "Before" is schema 1's per-member
    fit and no temperature at all; "after" (``ece`` etc.) comes from :func:`evaluate` on what the
    graph serves, and ``temperature`` records the shared temperature.
    """
    out = {"temperature": float(calibration.temperatures[0])}
    members = np.asarray(logits).shape[1]
    for tag, temps in (
        ("member_temperatures", calibration.member_temperatures),
        ("uncalibrated", np.ones(members)),
    ):
        mean = ensemble_mean(member_probabilities(logits, temps))
        out[f"ece_{tag}"] = expected_calibration_error(mean, labels)
        out[f"accuracy_{tag}"] = float(np.mean(mean.argmax(axis=1) == labels))
        out[f"estimated_accuracy_{tag}"] = float(np.mean(mean.max(axis=1)))
    return out
