"""The drift computation on DataFrames, with real Evidently (no database, no files)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from monitoring.drift.columns import ColumnMismatch
from monitoring.drift.computing import NotEnoughRows, compute_drift, dataset_drift
from monitoring.drift.fallback import FALLBACK_METHOD, total_variation
from monitoring.drift.settings import DriftSettings
from monitoring.drift.summary import ColumnDrift
from service.errors import UsageError
from tests.monitoring.conftest import DriftBundle

FEATURES = ["x1", "x2", "colour"]


def _run(bundle: DriftBundle, current: pd.DataFrame, **overrides: object):  # type: ignore[no-untyped-def]
    settings = DriftSettings(**overrides)  # type: ignore[arg-type]
    return compute_drift(bundle.manifest, 1, bundle.reference(), current, settings)


def _strict_json(summary_dict: dict[str, object]) -> dict[str, object]:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in summary.json")

    loaded: dict[str, object] = json.loads(
        json.dumps(summary_dict, allow_nan=False), parse_constant=refuse
    )
    return loaded


def test_reference_traffic_shows_no_drift(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(7), 400)
    summary = _run(drift_bundle, current).summary
    assert not summary.dataset_drift
    # Evidently's default tests alarm at 5% under no drift; 8 columns, allow at most one.
    false_alarms = [c for c, v in summary.columns.items() if v.drift_detected]
    assert len(false_alarms) <= 1, false_alarms
    assert set(summary.columns) == {
        *FEATURES,
        "__proba__no",
        "__proba__yes",
        "__proba__maybe",
        "__interval_width__",
        "__set_size__",
    }
    assert summary.rows_current == 400
    assert summary.rows_reference == 2000
    assert not summary.sampled


def test_one_std_shift_flags_that_feature(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(8), 400, x1_shift=1.0)
    columns = _run(drift_bundle, current).summary.columns
    assert columns["x1"].drift_detected
    assert not columns["x2"].drift_detected
    assert not columns["colour"].drift_detected


def test_realized_accuracy_equals_direct_count(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(9), 500, labelled=120)
    summary = _run(drift_bundle, current).summary
    labelled = current[current["true_label"].notna()]
    assert summary.labelled_rows == 120
    assert summary.realized_accuracy == pytest.approx(
        float((labelled["label"] == labelled["true_label"]).mean()), abs=1e-12
    )
    probs = current[["__proba__no", "__proba__yes", "__proba__maybe"]].to_numpy()
    assert summary.estimated_accuracy == pytest.approx(float(probs.max(axis=1).mean()), abs=1e-12)
    assert summary.expected_calibration_error is not None


def test_estimate_tracks_realized_on_unshifted_traffic(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(10), 600, labelled=600)
    summary = _run(drift_bundle, current).summary
    assert summary.realized_accuracy is not None
    assert abs(summary.estimated_accuracy - summary.realized_accuracy) <= 0.05


def test_no_feedback_gives_nulls(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(11), 100)
    data = _run(drift_bundle, current).summary.to_json_dict()
    assert data["realized_accuracy"] is None
    assert data["expected_calibration_error"] is None
    assert data["labelled_rows"] == 0


def test_few_labels_give_accuracy_but_no_ece(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(12), 100, labelled=10)
    summary = _run(drift_bundle, current, min_labelled_rows=50).summary
    assert summary.realized_accuracy is not None
    assert summary.expected_calibration_error is None


def test_interval_width_and_ambiguous_share_pairs(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(13), 100)
    summary = _run(drift_bundle, current).summary
    ref = drift_bundle.reference()
    assert summary.mean_interval_width.reference == pytest.approx(ref["__interval_width__"].mean())
    assert summary.mean_interval_width.current == pytest.approx(current["interval_width"].mean())
    assert summary.ambiguous_share.reference == pytest.approx((ref["__set_size__"] > 1).mean())
    assert summary.ambiguous_share.current == pytest.approx((current["set_size"] > 1).mean())


def test_summary_contract_fields(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(14), 60)
    data = _strict_json(_run(drift_bundle, current).summary.to_json_dict())
    for key in (
        "model", "versions", "window", "rows_current", "rows_reference", "sampled",
        "dataset_drift", "share_drifted", "columns", "estimated_accuracy", "realized_accuracy",
        "labelled_rows", "expected_calibration_error", "mean_interval_width", "ambiguous_share",
    ):  # fmt: skip
        assert key in data, key
    assert data["window"] == {"from": "2023-11-14T22:13:20Z", "to": "2023-11-14T22:14:19Z"}
    assert data["versions"] == ["1"]
    column = data["columns"]["x1"]  # type: ignore[index]
    assert set(column) == {"drift_detected", "score", "method", "threshold"}


def test_all_new_and_all_missing_columns_are_drifted_never_nan(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(15), 200)
    current["colour"] = "purple"  # every value unseen in training
    current["x2"] = np.nan  # Evidently refuses an empty column
    summary = _run(drift_bundle, current).summary
    assert summary.columns["colour"].drift_detected
    assert summary.columns["x2"].drift_detected
    assert summary.columns["x2"].method == FALLBACK_METHOD
    assert summary.columns["x2"].score == 1.0
    _strict_json(summary.to_json_dict())


def test_high_cardinality_categorical_is_bounded(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(16), 300)
    current["colour"] = [f"id-{i}" for i in range(300)]
    summary = _run(drift_bundle, current).summary
    assert summary.columns["colour"].drift_detected
    assert math.isfinite(summary.columns["colour"].score)


def test_large_window_is_sampled_and_says_so(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(17), 1500)
    summary = _run(drift_bundle, current, max_rows=1000).summary
    assert summary.sampled
    assert summary.rows_current == 1500
    assert any("max-rows" in w for w in summary.warnings)


def test_too_few_rows_is_not_enough(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(18), 20)
    with pytest.raises(NotEnoughRows, match="fewer than --min-rows 30"):
        _run(drift_bundle, current)


def test_log_without_a_feature_column_is_a_mismatch(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(19), 100).drop(columns=["x2"])
    with pytest.raises(ColumnMismatch, match="x2"):
        _run(drift_bundle, current)


def test_log_with_other_classes_is_a_mismatch(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(20), 100)
    current = current.rename(columns={"__proba__maybe": "__proba__perhaps"})
    with pytest.raises(ColumnMismatch, match="__proba__maybe"):
        _run(drift_bundle, current)


def test_per_column_method_and_threshold(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(21), 100)
    summary = _run(
        drift_bundle, current, column_method={"x1": "psi"}, column_threshold={"x1": 0.3}
    ).summary
    assert "psi" in summary.columns["x1"].method.lower()
    assert summary.columns["x1"].threshold == 0.3
    assert "psi" not in summary.columns["x2"].method.lower()


def test_global_method_applies_to_every_column(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(22), 100)
    summary = _run(drift_bundle, current, method="psi", threshold=0.25).summary
    assert all("psi" in c.method.lower() for c in summary.columns.values())
    assert all(c.threshold == 0.25 for c in summary.columns.values())


def test_unknown_override_column_and_method_are_usage_errors(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(23), 100)
    with pytest.raises(UsageError, match="unknown column"):
        _run(drift_bundle, current, column_method={"nope": "psi"})
    with pytest.raises(UsageError, match="Evidently refused"):
        _run(drift_bundle, current, method="no-such-test")


def test_total_variation_hand_computed() -> None:
    # ref a .5 b .5; cur a .75 missing .25 -> 0.5 * (.25 + .5 + .25) = 0.5
    ref = pd.Series(["a", "a", "b", "b"], dtype=object)
    cur = pd.Series(["a", "a", "a", None], dtype=object)
    assert total_variation(ref, cur, numeric=False) == pytest.approx(0.5)
    # constant reference 1.0: current 1.0, 1.0, 2.0, NaN -> equal .5, above .25, missing .25
    num = total_variation(pd.Series([1.0] * 4), pd.Series([1.0, 1.0, 2.0, np.nan]), numeric=True)
    assert num == pytest.approx(0.5)
    assert total_variation(ref, ref, numeric=False) == 0.0


def _columns(drifted: int, total: int) -> dict[str, ColumnDrift]:
    return {
        f"c{i}": ColumnDrift(drift_detected=i < drifted, score=0.0, method="ks", threshold=0.05)
        for i in range(total)
    }


def test_the_dataset_drifts_when_the_share_reaches_the_threshold_exactly() -> None:
    # 2 of 4 columns at drift_share 0.5: the share reaches the threshold, which is drift.
    assert dataset_drift(_columns(2, 4), 0.5) == (0.5, True)
    assert dataset_drift(_columns(1, 4), 0.5) == (0.25, False)
    assert dataset_drift(_columns(1, 4), 0.25) == (0.25, True)
    assert dataset_drift(_columns(0, 3), 0.5) == (0.0, False)
    assert dataset_drift(_columns(3, 3), 1.0) == (1.0, True)


def test_compute_drift_declares_drift_when_the_share_equals_drift_share(
    drift_bundle: DriftBundle,
) -> None:
    # The verdict in the summary follows the same rule as dataset_drift: a window whose share
    # of drifted columns equals drift_share has drifted. A shift of x1 drifts some columns but
    # not all, so the share is strictly between 0 and 1 and a threshold can sit exactly on it.
    current = drift_bundle.log_window(np.random.default_rng(8), 400, x1_shift=0.5)
    below = _run(drift_bundle, current, drift_share=1.0).summary
    assert 0 < below.share_drifted < 1
    assert not below.dataset_drift
    at = _run(drift_bundle, current, drift_share=below.share_drifted).summary
    assert at.share_drifted == below.share_drifted
    assert at.dataset_drift
