"""The card's fairness assembly on hand-made rows: figures per group, buckets, too-small groups
listed but not compared, disparities from the measured groups only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from service.bundle import SensitiveColumn
from training.report_fairness import fairness_card, fairness_report
from training.served_outputs import ServedOutputs


def _served(predicted: np.ndarray) -> ServedOutputs:
    # Confident, one-class sets holding the prediction; width 0.1 everywhere.
    n = len(predicted)
    mean = np.full((n, 2), 0.1)
    mean[np.arange(n), predicted] = 0.9
    sets = np.zeros((n, 2), dtype=bool)
    sets[np.arange(n), predicted] = True
    return ServedOutputs(mean, predicted.astype(np.int64), np.full(n, 0.1), sets)


def test_groups_buckets_and_too_small_groups_by_hand() -> None:
    # 40 rows of "a", all labels 1, all predicted 1: accuracy 1, selection rate of "yes" 1,
    #   TPR 1, FPR undefined (no negatives), coverage 1, set size 1, width 0.1.
    # 40 rows of "b": labels 1 on 20 rows, 0 on 20; predicted 1 everywhere: accuracy 0.5,
    #   selection rate 1, TPR 1, FPR 1.
    # 5 rows with a value outside the groups ("z" -> other): too small, listed with 5 rows.
    # 35 rows missing: labels 0, predicted 0: accuracy 1, selection rate 0, FPR 0.
    # "c" is a training group with no test rows: listed with 0 rows, too small.
    values = ["a"] * 40 + ["b"] * 40 + ["z"] * 5 + [None] * 35
    labels = np.array([1] * 40 + [1] * 20 + [0] * 20 + [1] * 5 + [0] * 35)
    predicted = np.array([1] * 40 + [1] * 40 + [0] * 5 + [0] * 35)
    column = SensitiveColumn(name="g", source="context", groups=["a", "b", "c"])
    report = fairness_report(
        [column],
        pd.DataFrame({"g": pd.Series(values, dtype=object)}),
        labels,
        _served(predicted),
        ["no", "yes"],
        level=0.95,
        seed=0,
    )
    (result,) = report.columns
    slices = {s.group: s for s in result.slices}
    assert list(slices) == ["a", "b", "c", "other", "missing"]
    assert [s.rows for s in result.slices] == [40, 40, 0, 5, 35]
    assert [s.too_small for s in result.slices] == [False, False, True, True, False]
    assert slices["c"].figures == {} and slices["other"].figures == {}
    a, b, m = slices["a"].figures, slices["b"].figures, slices["missing"].figures
    assert a["accuracy"].value == 1.0 and (a["accuracy"].low, a["accuracy"].high) == (1.0, 1.0)
    assert b["accuracy"].value == 0.5
    assert a["false_positive_rate"].value is None  # no negatives in "a"
    assert b["false_positive_rate"].value == 1.0 and m["false_positive_rate"].value == 0.0
    assert m["selection_rate_yes"].value == 0.0 and b["selection_rate_yes"].value == 1.0
    assert a["conformal_coverage"].value == 1.0 and b["conformal_coverage"].value == 0.5
    assert a["mean_interval_width"].value == pytest.approx(0.1)
    # Disparities over a, b and missing (the too-small groups are left out):
    # accuracy 1, 0.5, 1 -> difference 0.5, ratio 0.5.
    # Selection rate of "yes" 1, 1, 0 -> difference 1, ratio 0.
    # TPR: a 1, b 1, missing undefined -> difference 0, ratio 1; FPR: b 1, missing 0
    # (a undefined) -> difference 1, ratio 0; equalized odds (1, 0).
    d = result.disparities
    assert (d["accuracy"].difference, d["accuracy"].ratio) == (0.5, 0.5)
    assert (d["demographic_parity_yes"].difference, d["demographic_parity_yes"].ratio) == (1, 0)
    assert (d["equalized_odds"].difference, d["equalized_odds"].ratio) == (1.0, 0.0)
    card = "\n".join(fairness_card(report))
    assert "| `c` | 0 | too small (< 30 rows) |" in card
    assert "| `other` | 5 | too small (< 30 rows) |" in card
    assert "| `b` | 40 | 0.500 [" in card


def test_a_multiclass_card_has_selection_rates_per_class_and_no_odds() -> None:
    values = ["a"] * 30 + ["b"] * 30
    labels = np.array([0, 1, 2] * 20)
    predicted = np.array([0] * 30 + [2] * 30)
    n = len(labels)
    mean = np.full((n, 3), 0.2)
    mean[np.arange(n), predicted] = 0.6
    served = ServedOutputs(mean, predicted, np.full(n, 0.2), mean >= 0.6)
    column = SensitiveColumn(name="g", source="feature", groups=["a", "b"])
    report = fairness_report(
        [column], pd.DataFrame({"g": values}), labels, served, ["p", "q", "r"], level=0.9, seed=1
    )
    d = report.columns[0].disparities
    assert report.positive_class is None and "equalized_odds" not in d
    # Class p: a predicts it always (rate 1), b never (0) -> difference 1; class q: 0 and 0.
    assert d["demographic_parity_p"].difference == 1.0
    assert (d["demographic_parity_q"].difference, d["demographic_parity_q"].ratio) == (0.0, 1.0)
    card = "\n".join(fairness_card(report))
    assert "Selection rate (share of rows predicted as the class) per class" in card
