"""Per-group metric functions, pinned by hand-computed cases and run through MetricFrame."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame

from service.fairness import (
    accuracy,
    conformal_coverage,
    ece,
    false_positive_rate,
    mean_interval_width,
    mean_set_size,
    per_row,
    selection_rate_for,
    true_positive_rate,
)

# Eight binary rows in two groups (positive class = index 1):
#   A: y_true 1 1 0 0, y_pred 1 0 0 1 -> right 2/4: accuracy 0.5; predicted 1 in 2/4: rate 0.5;
#      positives (rows 0, 1) predicted 1 once: TPR 1/2; negatives (rows 2, 3) once: FPR 1/2.
#   B: y_true 1 0 0 0, y_pred 1 1 1 0 -> right rows 4 and 7: accuracy 0.5; rate of 1: 3/4;
#      the one positive is found: TPR 1; negatives 5, 6, 7 predicted 1, 1, 0: FPR 2/3.
Y_TRUE = np.array([1, 1, 0, 0, 1, 0, 0, 0])
Y_PRED = np.array([1, 0, 0, 1, 1, 1, 1, 0])
GROUP = np.array(["A"] * 4 + ["B"] * 4, dtype=object)


def test_binary_figures_of_each_group_by_hand() -> None:
    a, b = slice(0, 4), slice(4, 8)
    assert accuracy(Y_TRUE[a], Y_PRED[a]) == 0.5
    assert accuracy(Y_TRUE[b], Y_PRED[b]) == 0.5
    assert selection_rate_for(1)(Y_TRUE[a], Y_PRED[a]) == 0.5
    assert selection_rate_for(1)(Y_TRUE[b], Y_PRED[b]) == 0.75
    assert selection_rate_for(0)(Y_TRUE[b], Y_PRED[b]) == 0.25
    assert true_positive_rate(Y_TRUE[a], Y_PRED[a]) == 0.5
    assert true_positive_rate(Y_TRUE[b], Y_PRED[b]) == 1.0
    assert false_positive_rate(Y_TRUE[a], Y_PRED[a]) == 0.5
    assert false_positive_rate(Y_TRUE[b], Y_PRED[b]) == pytest.approx(2 / 3)


def test_undefined_figures_are_nan() -> None:
    empty = np.array([], dtype=np.int64)
    assert math.isnan(accuracy(empty, empty))
    # No positive row: the TPR has no denominator; no negative row: the FPR has none.
    assert math.isnan(true_positive_rate(np.array([0, 0]), np.array([1, 0])))
    assert math.isnan(false_positive_rate(np.array([1, 1]), np.array([1, 0])))
    assert math.isnan(ece(empty, empty, probabilities=np.zeros((0, 2))))
    assert math.isnan(conformal_coverage(empty, empty, prediction_sets=np.zeros((0, 2), bool)))
    assert math.isnan(mean_interval_width(empty, empty, interval_width=np.zeros(0)))


def test_ece_by_hand() -> None:
    # 15 bins, right-closed. Confidences 0.9 and 0.92 share bin 14 (13.5 and 13.8 round up to 14):
    # mean confidence 0.91, one of two right -> |0.5 - 0.91| = 0.41 with weight 2/4.
    # 0.7 (bin 11) right -> 0.3, weight 1/4; 0.65 (bin 10) wrong -> 0.65, weight 1/4.
    # ECE = 0.5 * 0.41 + 0.25 * 0.3 + 0.25 * 0.65 = 0.205 + 0.075 + 0.1625 = 0.4425.
    p = np.array([[0.9, 0.1], [0.92, 0.08], [0.3, 0.7], [0.35, 0.65]])
    y = np.array([0, 1, 1, 0])
    assert ece(y, p.argmax(axis=1), probabilities=p) == pytest.approx(0.4425)
    # The same rows packed for MetricFrame give the same figure.
    assert ece(y, p.argmax(axis=1), probabilities=per_row(p)) == pytest.approx(0.4425)


def test_conformal_coverage_and_set_size_by_hand() -> None:
    sets = np.array(
        [
            [True, False, False],  # label 0: covered, size 1
            [True, True, False],  # label 2: not covered, size 2
            [False, False, True],  # label 2: covered, size 1
            [False, True, True],  # label 0: not covered, size 2
            [True, True, True],  # label -1 (outside the classes): not covered, size 3
        ]
    )
    y = np.array([0, 2, 2, 0, -1])
    # Coverage 2/5 = 0.4; mean size (1 + 2 + 1 + 2 + 3) / 5 = 9/5 = 1.8.
    assert conformal_coverage(y, y, prediction_sets=sets) == pytest.approx(0.4)
    assert mean_set_size(y, y, prediction_sets=sets) == pytest.approx(1.8)
    assert conformal_coverage(y[:4], y[:4], prediction_sets=per_row(sets[:4])) == 0.5


def test_mean_interval_width_by_hand() -> None:
    widths = np.array([0.1, 0.3, 0.2])
    assert mean_interval_width(np.zeros(3), np.zeros(3), interval_width=widths) == pytest.approx(
        0.2
    )


def test_metric_frame_splits_rows_and_matrices_by_group() -> None:
    # Probabilities per row: A's four rows and B's four; ECE per group by hand.
    # A: confidences 0.9 (right), 0.8 (wrong: label 1, predicted 0), 0.6 (right: 0 vs 0),
    #    0.7 (wrong: label 0, predicted 1) -> bins 14, 12, 9, 11, one row each:
    #    (0.1 + 0.8 + 0.4 + 0.7) / 4 = 0.5.
    # B: every row confidence 0.75 (bin 12), right on rows 4 and 7: |0.5 - 0.75| = 0.25.
    p = np.array(
        [
            [0.1, 0.9],
            [0.8, 0.2],
            [0.6, 0.4],
            [0.3, 0.7],
            [0.25, 0.75],
            [0.25, 0.75],
            [0.25, 0.75],
            [0.75, 0.25],
        ]
    )
    assert (p.argmax(axis=1) == Y_PRED).all()
    # Sets: A holds both classes on row 0 only (3 covered of 4: rows 0, 2 and ...), see below.
    sets = np.array([[True, True], [True, False], [True, False], [False, True]] * 2)
    # A: labels 1 1 0 0 -> row 0 {0,1} yes, row 1 {0} no, row 2 {0} yes, row 3 {1} no: 0.5;
    #    sizes 2 1 1 1 -> 1.25.
    # B: labels 1 0 0 0 -> {0,1} yes, {0} yes, {0} yes, {1} no: 0.75; sizes 1.25 again.
    widths = np.array([0.2, 0.4, 0.2, 0.4, 0.1, 0.1, 0.1, 0.5])  # A 0.3, B 0.2
    frame = MetricFrame(
        metrics={
            "accuracy": accuracy,
            "selection_rate_1": selection_rate_for(1),
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "ece": ece,
            "coverage": conformal_coverage,
            "set_size": mean_set_size,
            "width": mean_interval_width,
        },
        y_true=Y_TRUE,
        y_pred=Y_PRED,
        sensitive_features=pd.Series(GROUP, name="group"),
        sample_params={
            "ece": {"probabilities": per_row(p)},
            "coverage": {"prediction_sets": per_row(sets)},
            "set_size": {"prediction_sets": per_row(sets)},
            "width": {"interval_width": widths},
        },
    )
    got = frame.by_group
    expected = {
        "A": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.25, 0.3],
        "B": [0.5, 0.75, 1.0, 2 / 3, 0.25, 0.75, 1.25, 0.2],
    }
    for group, values in expected.items():
        np.testing.assert_allclose(got.loc[group].to_numpy(dtype=float), values)
