"""Fairness slices of the drift job: per-group figures worked out by hand, the direction of a
disparity, too-small groups, and the metrics they set."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest

from monitoring.drift.computing import compute_drift
from monitoring.drift.fairness import FairnessSettings, fairness_figures
from monitoring.drift.metrics import DriftMetrics
from monitoring.drift.settings import DriftSettings
from monitoring.drift.summary import DriftSummary
from service.bundle import Manifest
from service.bundle.manifest import SensitiveColumn
from service.predlog.layout import context_column
from tests.monitoring.conftest import CLASSES_PREFIX, DriftBundle

REGION = context_column("region")
SETTINGS = FairnessSettings(resamples=200, bootstrap_rows=20_000, seed=0)
#: 19 calibration scores of 0.75: at level 0.95 the threshold is the ceil(20 * 0.95) = 19th
#: score, 0.75, so a set holds every class of probability >= 0.25 (and the top class).
SCORES = [0.75] * 19


def _manifest(bundle: DriftBundle, classes: list[str] | None = None) -> Manifest:
    calibration = bundle.manifest.calibration.model_copy(update={"conformal_scores": SCORES})
    update: dict[str, object] = {
        "calibration": calibration,
        "sensitive": [
            SensitiveColumn(name="region", source="context", groups=["north", "south", "east"])
        ],
    }
    if classes is not None:
        update["classes"] = classes
    return bundle.manifest.model_copy(update=update)


def _rows(
    count: int, region: str | None, probabilities: tuple[float, ...], label: str, truth: str | None
) -> list[dict[str, object]]:
    row: dict[str, object] = {REGION: region, "label": label, "true_label": truth}
    classes = ["no", "yes", "maybe"][: len(probabilities)]
    row.update({f"{CLASSES_PREFIX}{c}": p for c, p in zip(classes, probabilities, strict=True)})
    return [dict(row) for _ in range(count)]


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["version"] = 1
    frame["confidence_level"] = 0.95
    frame["true_label"] = frame["true_label"].astype(object)
    return frame


NORTH = (0.8, 0.1, 0.1)  # set {no}
NORTH_YES = (0.2, 0.6, 0.2)  # set {yes}: 0.2 < 0.25
SOUTH = (0.5, 0.3, 0.2)  # set {no, yes}
SOUTH_YES = (0.3, 0.4, 0.3)  # set {no, yes, maybe}


def _hand_window() -> pd.DataFrame:
    return _frame(
        # north, 40 rows: 20 served "no" (top 0.8), 20 served "yes" (top 0.6); 30 labelled, 24
        # of them right.
        _rows(12, "north", NORTH, "no", "no")
        + _rows(3, "north", NORTH, "no", "yes")
        + _rows(5, "north", NORTH, "no", None)
        + _rows(12, "north", NORTH_YES, "yes", "yes")
        + _rows(3, "north", NORTH_YES, "yes", "maybe")
        + _rows(5, "north", NORTH_YES, "yes", None)
        # south, 40 rows: 10 served "no" (top 0.5), 30 served "yes" (top 0.4); 30 labelled, 15
        # of them right.
        + _rows(5, "south", SOUTH, "no", "no")
        + _rows(5, "south", SOUTH, "no", "yes")
        + _rows(10, "south", SOUTH_YES, "yes", "yes")
        + _rows(10, "south", SOUTH_YES, "yes", "no")
        + _rows(10, "south", SOUTH_YES, "yes", None)
        # "west" is not a training group (-> other), 5 rows; 3 rows without a region (-> missing).
        + _rows(5, "west", NORTH, "no", "no")
        + _rows(3, None, NORTH, "no", None)
    )


def test_per_group_figures_worked_out_by_hand(drift_bundle: DriftBundle) -> None:
    figures, notes = fairness_figures(_hand_window(), _manifest(drift_bundle), 1, SETTINGS)
    assert figures is not None and notes == []
    region = figures.columns["region"]
    assert region.source == "context"
    # Every training group is listed, even "east" with no row; then the buckets that have rows.
    assert list(region.groups) == ["north", "south", "east", "other", "missing"]
    north, south = region.groups["north"], region.groups["south"]
    assert (north.rows, north.labelled_rows, north.too_small) == (40, 30, False)
    assert (south.rows, south.labelled_rows, south.too_small) == (40, 30, False)
    values = {
        group: {name: e.value for name, e in region.groups[group].figures.items()}
        for group in ("north", "south")
    }
    assert values["north"] == pytest.approx(
        {
            "selection_rate_no": 20 / 40,
            "selection_rate_yes": 20 / 40,
            "selection_rate_maybe": 0.0,
            # (20 x 0.8 + 20 x 0.6) / 40
            "estimated_accuracy": 0.7,
            # (12 + 12) right of 30 labelled
            "realized_accuracy": 0.8,
            # the 3 "yes" under a {no} set and the 3 "maybe" under a {yes} set are missed
            "conformal_coverage": 24 / 30,
            "mean_set_size": 1.0,
        },
        abs=1e-12,
    )
    assert values["south"] == pytest.approx(
        {
            "selection_rate_no": 10 / 40,
            "selection_rate_yes": 30 / 40,
            "selection_rate_maybe": 0.0,
            # (10 x 0.5 + 30 x 0.4) / 40 = 17 / 40
            "estimated_accuracy": 0.425,
            # 5 + 10 right of 30 labelled
            "realized_accuracy": 0.5,
            # {no, yes} holds "no" and "yes"; the three-class sets hold everything
            "conformal_coverage": 1.0,
            # (10 x 2 + 20 x 3) / 30 labelled rows
            "mean_set_size": 80 / 30,
        },
        abs=1e-12,
    )
    for group in ("north", "south"):
        for name, e in region.groups[group].figures.items():
            assert e.low is not None and e.high is not None and e.value is not None, name
            assert e.low <= e.value + 1e-12 and e.value <= e.high + 1e-12, (group, name)
    # A figure constant over the group's rows has a zero-width interval.
    maybe = north.figures["selection_rate_maybe"]
    assert (maybe.low, maybe.high) == (0.0, 0.0)
    assert north.figures["estimated_accuracy"].rows == 40
    assert north.figures["realized_accuracy"].rows == 30
    # Too small: listed with their counts, no figures.
    assert region.groups["east"].model_dump() == {
        "rows": 0, "labelled_rows": 0, "too_small": True, "figures": {}
    }  # fmt: skip
    assert region.groups["other"].model_dump() == {
        "rows": 5, "labelled_rows": 5, "too_small": True, "figures": {}
    }  # fmt: skip
    assert (region.groups["missing"].rows, region.groups["missing"].too_small) == (3, True)
    gaps = {name: d.model_dump() for name, d in region.disparity.items()}
    assert gaps["estimated_accuracy"] == pytest.approx(
        # 0.7 - 0.425; 0.425 / 0.7
        {"difference": 0.275, "ratio": 17 / 28, "lowest": "south", "highest": "north"}
    )
    assert gaps["realized_accuracy"] == pytest.approx(
        {"difference": 0.3, "ratio": 0.625, "lowest": "south", "highest": "north"}
    )
    assert gaps["selection_rate_yes"] == pytest.approx(
        {"difference": 0.25, "ratio": 0.5 / 0.75, "lowest": "north", "highest": "south"}
    )
    assert gaps["conformal_coverage"] == pytest.approx(
        {"difference": 0.2, "ratio": 0.8, "lowest": "north", "highest": "south"}
    )
    # Both 0: no gap, ratio 1.
    assert gaps["selection_rate_maybe"]["difference"] == 0.0
    assert gaps["selection_rate_maybe"]["ratio"] == 1.0


def test_binary_rates_and_figures_on_too_few_rows_stay_out_of_the_disparity(
    drift_bundle: DriftBundle,
) -> None:
    yes, no = (0.3, 0.7), (0.7, 0.3)
    window = _frame(
        # north: 40 positives, 30 predicted "yes" (TPR 0.75); 40 negatives, 8 predicted "yes"
        # (FPR 0.2).
        _rows(30, "north", yes, "yes", "yes")
        + _rows(10, "north", no, "no", "yes")
        + _rows(8, "north", yes, "yes", "no")
        + _rows(32, "north", no, "no", "no")
        # south: 30 positives, 12 predicted "yes" (TPR 0.4); 50 negatives, 20 predicted "yes"
        # (FPR 0.4).
        + _rows(12, "south", yes, "yes", "yes")
        + _rows(18, "south", no, "no", "yes")
        + _rows(20, "south", yes, "yes", "no")
        + _rows(30, "south", no, "no", "no")
        # east: 40 rows but only 10 positives, all predicted "yes": TPR 1.0 on 10 rows, reported
        # but too few to compare; 30 negatives, none predicted "yes" (FPR 0).
        + _rows(10, "east", yes, "yes", "yes")
        + _rows(30, "east", no, "no", "no")
    )
    figures, _ = fairness_figures(window, _manifest(drift_bundle, ["no", "yes"]), 1, SETTINGS)
    assert figures is not None
    region = figures.columns["region"]
    rates = [
        (figures["true_positive_rate"], figures["false_positive_rate"])
        for figures in (region.groups[g].figures for g in ("north", "south", "east"))
    ]
    assert [x for t, f in rates for x in (t.value, t.rows, f.value, f.rows)] == pytest.approx(
        [0.75, 40, 0.2, 40, 0.4, 30, 0.4, 50, 1.0, 10, 0.0, 30]
    )
    tpr = region.disparity["true_positive_rate"]
    # east's 1.0 rests on 10 positives: left out, so the gap is north's 0.75 - south's 0.4.
    assert (tpr.difference, tpr.lowest, tpr.highest) == pytest.approx((0.35, "south", "north"))
    fpr = region.disparity["false_positive_rate"]
    assert (fpr.difference, fpr.lowest, fpr.highest) == pytest.approx((0.4, "east", "south"))


def test_group_with_worse_labels_is_the_lowest(drift_bundle: DriftBundle) -> None:
    # Real traffic of the bundle, labels drawn from the served probabilities (calibrated), then
    # group B's labels are replaced by a wrong class on every other labelled row: B's realized
    # accuracy drops by about half, A's stays at its estimate.
    rng = np.random.default_rng(21)
    current = drift_bundle.log_window(rng, 1200, labelled=1200)
    current[REGION] = np.where(np.arange(1200) % 2 == 0, "A", "B")
    classes = drift_bundle.manifest.classes
    spoil = (current[REGION] == "B").to_numpy() & (np.arange(1200) % 4 == 1)
    wrong = [classes[(classes.index(p) + 1) % 3] for p in current.loc[spoil, "label"]]
    current.loc[spoil, "true_label"] = wrong
    manifest = drift_bundle.manifest.model_copy(
        update={"sensitive": [SensitiveColumn(name="region", source="context", groups=["A", "B"])]}
    )
    summary = compute_drift(manifest, 1, drift_bundle.reference(), current, DriftSettings()).summary
    assert summary.fairness is not None
    region = summary.fairness.columns["region"]
    a = region.groups["A"].figures["realized_accuracy"]
    b = region.groups["B"].figures["realized_accuracy"]
    labelled = current[current[REGION] == "B"]
    assert b.value == pytest.approx(float((labelled["label"] == labelled["true_label"]).mean()))
    assert a.value is not None and b.value is not None and b.high is not None
    assert b.high < a.value  # B's whole interval lies below A's figure
    gap = region.disparity["realized_accuracy"]
    assert (gap.lowest, gap.highest) == ("B", "A")
    assert gap.difference == pytest.approx(a.value - b.value)
    # The label-free estimate cannot see the spoiled labels: its gap stays small. It is the
    # job's own estimate per group: weighted by rows, the groups give the window's.
    assert region.disparity["estimated_accuracy"].difference < 0.05
    weighted = 0.0
    for group in region.groups.values():
        estimate = group.figures["estimated_accuracy"].value
        assert estimate is not None
        weighted += group.rows * estimate
    assert weighted / 1200 == pytest.approx(summary.estimated_accuracy, abs=1e-12)
    json.dumps(summary.to_json_dict(), allow_nan=False)


def test_absent_context_column_is_a_warning_and_one_missing_group(
    drift_bundle: DriftBundle,
) -> None:
    current = drift_bundle.log_window(np.random.default_rng(22), 60)
    summary = compute_drift(
        _manifest(drift_bundle), 1, drift_bundle.reference(), current, DriftSettings()
    ).summary
    assert any("context.region" in w for w in summary.warnings)
    assert summary.fairness is not None
    groups = summary.fairness.columns["region"].groups
    assert {g: v.rows for g, v in groups.items()} == {
        "north": 0, "south": 0, "east": 0, "missing": 60
    }  # fmt: skip
    assert summary.fairness.columns["region"].disparity == {}


def test_bundle_without_sensitive_columns_has_no_fairness(drift_bundle: DriftBundle) -> None:
    current = drift_bundle.log_window(np.random.default_rng(23), 60)
    summary = compute_drift(
        drift_bundle.manifest, 1, drift_bundle.reference(), current, DriftSettings()
    ).summary
    assert summary.fairness is None
    assert summary.to_json_dict()["fairness"] is None


def test_bootstrap_of_a_large_group_resamples_a_capped_sample(drift_bundle: DriftBundle) -> None:
    window = _hand_window()
    capped = FairnessSettings(resamples=200, bootstrap_rows=100, seed=0)
    figures, _ = fairness_figures(window, _manifest(drift_bundle), 1, capped)
    assert figures is not None and figures.bootstrap_rows == 100
    # 40 rows per group, under the cap: the same intervals as uncapped.
    full, _ = fairness_figures(window, _manifest(drift_bundle), 1, SETTINGS)
    assert full is not None
    assert figures.columns == full.columns


def _with_fairness(bundle: DriftBundle, window: pd.DataFrame) -> DriftSummary:
    """A real summary of the bundle's traffic, with the fairness figures of ``window``."""
    figures, _ = fairness_figures(window, _manifest(bundle), 1, SETTINGS)
    traffic = bundle.log_window(np.random.default_rng(24), 40)
    summary = compute_drift(bundle.manifest, 1, bundle.reference(), traffic, DriftSettings())
    return summary.summary.model_copy(update={"fairness": figures})


def _series(text: str, group: str) -> set[str]:
    """Names of the fairness series of a group in an exposition."""
    return {
        line.split("{")[0]
        for line in text.splitlines()
        if line.startswith("probserve_fairness_") and f'group="{group}"' in line
    }


def test_metrics_follow_the_groups_and_drop_what_left(drift_bundle: DriftBundle) -> None:
    metrics = DriftMetrics()
    metrics.record(
        _with_fairness(drift_bundle, _hand_window()), reference_accuracy=None, finished_at=1.0
    )
    text = generate_latest(metrics.registry).decode()
    base = 'column="region",group="north",model="toy"'
    assert f"probserve_fairness_estimated_accuracy{{{base}}} 0.7" in text
    assert f"probserve_fairness_realized_accuracy{{{base}}} 0.8" in text
    assert f'probserve_fairness_selection_rate{{class="no",{base}}} 0.5' in text
    assert f"probserve_fairness_group_rows{{{base}}} 40.0" in text
    disparity = 'column="region",figure="realized_accuracy",model="toy"'
    assert f"probserve_fairness_disparity{{{disparity}}} 0.3" in text
    # A too-small group has its row count and nothing else.
    assert 'probserve_fairness_group_rows{column="region",group="other",model="toy"} 5.0' in text
    assert _series(text, "other") == {"probserve_fairness_group_rows"}
    # Next run: no labels, and no row in south. Realized figures and south's figures are gone,
    # not left at their old values; south's row count says 0.
    later = _frame(_rows(40, "north", NORTH, "no", None) + _rows(40, "east", NORTH, "no", None))
    metrics.record(_with_fairness(drift_bundle, later), reference_accuracy=None, finished_at=2.0)
    text = generate_latest(metrics.registry).decode()
    assert "probserve_fairness_realized_accuracy{" not in text
    assert _series(text, "south") == {"probserve_fairness_group_rows"}
    assert 'probserve_fairness_group_rows{column="region",group="south",model="toy"} 0.0' in text
    assert 'probserve_fairness_group_rows{column="region",group="east",model="toy"} 40.0' in text
    assert _series(text, "other") == set()
    assert "NaN" not in text
