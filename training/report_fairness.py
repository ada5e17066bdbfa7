"""The model card's fairness slices: per sensitive column and group, the test-split figures with
bootstrap intervals and the disparities between groups, as Markdown and as ``fairness.json``.

Point figures come from Fairlearn's ``MetricFrame`` over the shared metric functions of
:mod:`service.fairness` (the drift job slices with the same ones); each group's interval is the
shared percentile bootstrap over that group's rows. Groups are named by
:func:`service.fairness.group_labels`: the manifest's groups, then ``other`` and ``missing``.
A group under :data:`service.fairness.MIN_GROUP_SIZE` test rows is listed with its row count as
too small, and left out of the disparities; a training group with no test rows is listed too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict

from service.bundle import OTHER_GROUP, SensitiveColumn
from service.fairness import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    MIN_GROUP_SIZE,
    MISSING_GROUP,
    POSITIVE_CLASS,
    Disparity,
    MetricFunction,
    accuracy,
    between_groups,
    bootstrap_interval,
    conformal_coverage,
    demographic_parity,
    ece,
    equalized_odds,
    false_positive_rate,
    group_labels,
    mean_interval_width,
    mean_set_size,
    per_row,
    selection_rate_for,
    too_small,
    true_positive_rate,
)
from training.served_outputs import ServedOutputs

FAIRNESS_JSON = "fairness.json"

ACCURACY = "accuracy"
SELECTION_RATE_PREFIX = "selection_rate_"
TRUE_POSITIVE_RATE = "true_positive_rate"
FALSE_POSITIVE_RATE = "false_positive_rate"
ECE = "ece"
CONFORMAL_COVERAGE = "conformal_coverage"
MEAN_SET_SIZE = "mean_set_size"
MEAN_INTERVAL_WIDTH = "mean_interval_width"
DEMOGRAPHIC_PARITY_PREFIX = "demographic_parity_"
EQUALIZED_ODDS = "equalized_odds"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Estimate(_Model):
    """A figure and its bootstrap interval; None where the figure is undefined."""

    value: float | None
    low: float | None
    high: float | None


class GroupSlice(_Model):
    """One group's test rows and figures (none when the group is too small)."""

    group: str
    rows: int
    too_small: bool
    figures: dict[str, Estimate]


class DisparityFigure(_Model):
    """Between-group difference (max - min) and ratio (min / max) over the measured groups."""

    difference: float | None
    ratio: float | None


class ColumnFairness(_Model):
    """One sensitive column: its groups' slices and the disparities between them."""

    name: str
    source: str
    groups: list[str]
    slices: list[GroupSlice]
    disparities: dict[str, DisparityFigure]


class FairnessReport(_Model):
    """Everything the card's fairness sections state, as ``report/fairness.json`` holds it."""

    split: str = "test"
    level: float
    classes: list[str]
    positive_class: str | None
    min_group_size: int = MIN_GROUP_SIZE
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES
    bootstrap_level: float = BOOTSTRAP_LEVEL
    seed: int
    columns: list[ColumnFairness]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _metrics(classes: Sequence[str]) -> dict[str, MetricFunction]:
    metrics: dict[str, MetricFunction] = {ACCURACY: accuracy}
    for i, c in enumerate(classes):
        metrics[f"{SELECTION_RATE_PREFIX}{c}"] = selection_rate_for(i)
    if len(classes) == 2:
        metrics[TRUE_POSITIVE_RATE] = true_positive_rate
        metrics[FALSE_POSITIVE_RATE] = false_positive_rate
    metrics[ECE] = ece
    metrics[CONFORMAL_COVERAGE] = conformal_coverage
    metrics[MEAN_SET_SIZE] = mean_set_size
    metrics[MEAN_INTERVAL_WIDTH] = mean_interval_width
    return metrics


def _sample_params(served: ServedOutputs) -> dict[str, dict[str, ArrayLike]]:
    return {
        ECE: {"probabilities": per_row(served.mean)},
        CONFORMAL_COVERAGE: {"prediction_sets": per_row(served.sets)},
        MEAN_SET_SIZE: {"prediction_sets": per_row(served.sets)},
        MEAN_INTERVAL_WIDTH: {"interval_width": served.interval_width},
    }


def column_fairness(
    column: SensitiveColumn,
    values: Sequence[object],
    labels: NDArray[np.int64],
    served: ServedOutputs,
    classes: Sequence[str],
    seed: int,
) -> ColumnFairness:
    """Figures per group of one sensitive column over the test rows ``values`` describe."""
    groups = group_labels(values, column.groups)
    metrics = _metrics(classes)
    params = _sample_params(served)
    frame = MetricFrame(
        metrics=metrics,
        y_true=labels,
        y_pred=served.predicted,
        sensitive_features=pd.Series(groups, name=column.name),
        sample_params=params,
    )
    by_group = frame.by_group
    order = [*column.groups, OTHER_GROUP, MISSING_GROUP]
    present = set(groups.tolist())
    slices: list[GroupSlice] = []
    for group in order:
        rows = np.flatnonzero(groups == group)
        if group not in column.groups and group not in present:
            continue  # an empty bucket says nothing; an empty training group is listed
        if too_small(len(rows)):
            slices.append(GroupSlice(group=group, rows=len(rows), too_small=True, figures={}))
            continue
        figures = {}
        for name, metric in metrics.items():
            # Any: the arrays go to ``**sample_params`` beside bootstrap_interval's own keywords.
            group_params: dict[str, Any] = {
                k: np.asarray(v)[rows] for k, v in params.get(name, {}).items()
            }
            low, high = bootstrap_interval(
                metric, labels[rows], served.predicted[rows], seed=seed, **group_params
            )
            figures[name] = Estimate(
                value=_finite(float(by_group.loc[group, name])),
                low=_finite(low),
                high=_finite(high),
            )
        slices.append(GroupSlice(group=group, rows=len(rows), too_small=False, figures=figures))
    return ColumnFairness(
        name=column.name,
        source=column.source,
        groups=list(column.groups),
        slices=slices,
        disparities=_disparities(slices, classes),
    )


def _disparities(
    slices: Sequence[GroupSlice], classes: Sequence[str]
) -> dict[str, DisparityFigure]:
    measured = [s for s in slices if not s.too_small]

    def per_group(name: str) -> dict[str, float]:
        out = {}
        for s in measured:
            value = s.figures[name].value
            out[s.group] = float("nan") if value is None else value
        return out

    def figure(d: Disparity) -> DisparityFigure:
        return DisparityFigure(difference=_finite(d.difference), ratio=_finite(d.ratio))

    # Binary: parity of the positive class (the other class's difference is the same number);
    # more classes: parity of each class's selection rate.
    parity_classes = [classes[POSITIVE_CLASS]] if len(classes) == 2 else list(classes)
    out = {
        f"{DEMOGRAPHIC_PARITY_PREFIX}{c}": figure(
            demographic_parity(per_group(f"{SELECTION_RATE_PREFIX}{c}"))
        )
        for c in parity_classes
    }
    if len(classes) == 2:
        out[EQUALIZED_ODDS] = figure(
            equalized_odds(per_group(TRUE_POSITIVE_RATE), per_group(FALSE_POSITIVE_RATE))
        )
    for name in (ACCURACY, ECE, CONFORMAL_COVERAGE, MEAN_INTERVAL_WIDTH):
        out[name] = figure(between_groups(per_group(name)))
    return out


def fairness_report(
    columns: Sequence[SensitiveColumn],
    test_values: pd.DataFrame,
    labels: NDArray[np.int64],
    served: ServedOutputs,
    classes: Sequence[str],
    *,
    level: float,
    seed: int,
) -> FairnessReport:
    """The fairness figures of every sensitive column on the test rows (``test_values`` holds
    each column's raw values, row for row with ``labels`` and ``served``)."""
    return FairnessReport(
        level=level,
        classes=list(classes),
        positive_class=classes[POSITIVE_CLASS] if len(classes) == 2 else None,
        seed=seed,
        columns=[
            column_fairness(c, test_values[c.name].tolist(), labels, served, classes, seed)
            for c in columns
        ],
    )


def write_fairness_json(report: FairnessReport, report_dir: Path) -> None:
    """Write ``fairness.json`` (pretty, nulls for undefined figures) into the report folder."""
    (report_dir / FAIRNESS_JSON).write_text(report.model_dump_json(indent=2) + "\n")


def read_fairness_json(report_dir: Path) -> FairnessReport:
    """Read a bundle's ``report/fairness.json``."""
    return FairnessReport.model_validate_json((report_dir / FAIRNESS_JSON).read_bytes())


def _cell(estimate: Estimate | None) -> str:
    if estimate is None or estimate.value is None:
        return "n/a"
    if estimate.low is None or estimate.high is None:
        return f"{estimate.value:.3f}"
    return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def fairness_card(report: FairnessReport) -> list[str]:
    """Markdown lines: one section per sensitive column (empty list for no column)."""
    lines: list[str] = []
    binary = report.positive_class is not None
    level = f"{round(report.level * 100)}%"
    for column in report.columns:
        where = (
            "a model input"
            if column.source == "feature"
            else "kept out of the model, carried beside the features"
        )
        lines += [
            f"## Fairness: `{column.name}`",
            "",
            f"`{column.name}` is {where}. Test split, sets and intervals at {level}; in brackets "
            f"a percentile bootstrap {round(report.bootstrap_level * 100)}% interval "
            f"({report.bootstrap_resamples} resamples of the group's rows, seed {report.seed}). "
            f"Groups are the training split's largest {len(column.groups)} values, then "
            f"`{OTHER_GROUP}` (any other value) and `{MISSING_GROUP}`; a group with fewer than "
            f"{report.min_group_size} test rows is too small to measure and is left out of the "
            "disparities. ECE is biased upward on few rows, and more so in resamples (which "
            "repeat rows), so its interval can sit above its figure.",
            "",
        ]
        names = [ACCURACY]
        heads = ["accuracy"]
        if binary:
            names += [f"{SELECTION_RATE_PREFIX}{report.positive_class}"]
            heads += [f"selection rate `{report.positive_class}`"]
            names += [TRUE_POSITIVE_RATE, FALSE_POSITIVE_RATE]
            heads += ["TPR", "FPR"]
        names += [ECE, CONFORMAL_COVERAGE, MEAN_SET_SIZE, MEAN_INTERVAL_WIDTH]
        heads += ["ECE", "set coverage", "set size", "interval width"]
        lines += _group_table(column, names, heads, report.min_group_size)
        if not binary:
            lines += ["", "Selection rate (share of rows predicted as the class) per class:", ""]
            names = [f"{SELECTION_RATE_PREFIX}{c}" for c in report.classes]
            lines += _group_table(
                column, names, [f"`{c}`" for c in report.classes], report.min_group_size
            )
        lines += ["", "| disparity between groups | difference (max - min) | ratio (min / max) |"]
        lines += ["|---|---|---|"]
        for key, d in column.disparities.items():
            lines.append(
                f"| {_disparity_name(key)} | {_number(d.difference)} | {_number(d.ratio)} |"
            )
        lines.append("")
    return lines


def _group_table(
    column: ColumnFairness, names: Sequence[str], heads: Sequence[str], min_rows: int
) -> list[str]:
    lines = [
        "| group | rows | " + " | ".join(heads) + " |",
        "|---|---|" + "---|" * len(heads),
    ]
    for s in column.slices:
        if s.too_small:
            cells = [f"too small (< {min_rows} rows)"] + [""] * (len(names) - 1)
        else:
            cells = [_cell(s.figures.get(n)) for n in names]
        lines.append(f"| `{s.group}` | {s.rows} | " + " | ".join(cells) + " |")
    return lines


def _disparity_name(key: str) -> str:
    if key.startswith(DEMOGRAPHIC_PARITY_PREFIX):
        return f"demographic parity (selection rate of `{key[len(DEMOGRAPHIC_PARITY_PREFIX) :]}`)"
    return {
        EQUALIZED_ODDS: "equalized odds (worse of TPR and FPR)",
        ACCURACY: "accuracy",
        ECE: "ECE",
        CONFORMAL_COVERAGE: "set coverage",
        MEAN_INTERVAL_WIDTH: "interval width",
    }[key]
