"""Fairness slices of a drift window: per sensitive column and group, figures with intervals.

For each of the bundle's sensitive columns the window's rows are split into the manifest's
groups plus the ``other`` and ``missing`` buckets (service.fairness.group_labels). Per group:
label-free figures on every row (the selection rate of each class, and the job's own estimated
accuracy, the mean top-class probability), and realized figures on the rows with a feedback
label (accuracy; TPR and FPR for a binary model; the coverage and mean size of the bundle's
conformal sets on the labelled rows of the baseline version, as ``conformal.static_coverage``).
Each figure carries a seeded percentile-bootstrap 95% interval. The group mapping, the metric
functions, the interval and the disparity are service.fairness's, shared with the trainer's
model card; this module only chooses the rows each figure is computed on.

A figure computed on fewer than service.fairness.MIN_GROUP_SIZE rows is too small to compare:
a group that small is listed with its row counts and no figures, and a figure on too few
labelled rows is reported but left out of the disparity (docs/architecture.md, Monitoring).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from monitoring.drift.columns import LOG_LABEL, LOG_TRUE_LABEL, probability_columns
from monitoring.drift.conformal import sets_at_levels
from monitoring.drift.figures import estimated_accuracy
from monitoring.drift.summary import (
    Disparity,
    Estimate,
    FairnessFigures,
    GroupFigures,
    SensitiveFigures,
)
from service.bundle import Manifest
from service.bundle.manifest import SensitiveColumn
from service.fairness import (
    BOOTSTRAP_LEVEL,
    MIN_GROUP_SIZE,
    POSITIVE_CLASS,
    RESERVED_GROUPS,
    MetricFunction,
    accuracy,
    between_groups,
    bootstrap_interval,
    conformal_coverage,
    false_positive_rate,
    group_labels,
    mean_set_size,
    selection_rate_for,
    too_small,
    true_positive_rate,
)
from service.predlog.layout import context_column

ESTIMATED_ACCURACY = "estimated_accuracy"
REALIZED_ACCURACY = "realized_accuracy"
TRUE_POSITIVE_RATE = "true_positive_rate"
FALSE_POSITIVE_RATE = "false_positive_rate"
CONFORMAL_COVERAGE = "conformal_coverage"
MEAN_SET_SIZE = "mean_set_size"
SELECTION_RATE_PREFIX = "selection_rate_"


def selection_rate_figure(label: str) -> str:
    """The figure name of the selection rate of class ``label``."""
    return SELECTION_RATE_PREFIX + label


def _estimated_accuracy(y_true: ArrayLike, y_pred: ArrayLike, *, probabilities: ArrayLike) -> float:
    # The drift job's label-free estimate, as compute_drift takes it for the whole window, in
    # the metric-function form the bootstrap resamples.
    matrix = np.asarray(probabilities, dtype=np.float64)
    return estimated_accuracy(np.nan_to_num(matrix)) if len(matrix) else math.nan


@dataclass(frozen=True)
class WindowArrays:
    """The window as the metric functions take it: class indices, one entry per row."""

    #: Index of the served label in the manifest's classes (-1: not a class).
    predicted: NDArray[np.int64]
    #: Index of the feedback label (-1: none, or not a class).
    truth: NDArray[np.int64]
    labelled: NDArray[np.bool_]
    probabilities: NDArray[np.float64]
    #: The bundle's conformal sets on the labelled rows of the baseline version (else False).
    sets: NDArray[np.bool_]
    in_sets: NDArray[np.bool_]


@dataclass(frozen=True)
class Figure:
    """One per-group figure: its metric, the rows it is computed on, its sample parameters."""

    name: str
    metric: MetricFunction
    rows: NDArray[np.bool_]
    params: Mapping[str, NDArray[np.generic]]


def window_arrays(
    current: pd.DataFrame, manifest: Manifest, reference_version: int
) -> WindowArrays:
    """Class indices, probabilities and the bundle's conformal sets of every window row."""
    index = {c: i for i, c in enumerate(manifest.classes)}
    n = len(current)

    def indices(column: str) -> NDArray[np.int64]:
        if column not in current.columns:
            return np.full(n, -1, dtype=np.int64)
        values = current[column].to_numpy(dtype=object)
        return np.fromiter(
            (index.get(v, -1) if isinstance(v, str) else -1 for v in values), np.int64, count=n
        )

    predicted, truth = indices(LOG_LABEL), indices(LOG_TRUE_LABEL)
    labelled = (
        current[LOG_TRUE_LABEL].notna().to_numpy()
        if LOG_TRUE_LABEL in current.columns
        else np.zeros(n, dtype=bool)
    )
    probabilities = (
        current[probability_columns(manifest)]
        .apply(pd.to_numeric, errors="coerce")
        .to_numpy(dtype=np.float64)
    )
    in_sets = labelled & (truth >= 0)
    if "version" in current.columns:
        in_sets &= (
            pd.to_numeric(current["version"], errors="coerce").to_numpy() == reference_version
        )
    sets = np.zeros(probabilities.shape, dtype=bool)
    if in_sets.any():
        levels = pd.to_numeric(current["confidence_level"], errors="coerce").to_numpy(np.float64)
        scores = np.asarray(manifest.calibration.conformal_scores, dtype=np.float64)
        sets[in_sets] = sets_at_levels(probabilities[in_sets], levels[in_sets], scores)
    return WindowArrays(predicted, truth, labelled, probabilities, sets, in_sets)


def figures_of(arrays: WindowArrays, classes: list[str]) -> list[Figure]:
    """Every figure of a group, with the window rows it is computed on."""
    every = np.ones(len(arrays.predicted), dtype=bool)
    out = [
        Figure(selection_rate_figure(c), selection_rate_for(i), every, {})
        for i, c in enumerate(classes)
    ]
    out.append(
        Figure(
            ESTIMATED_ACCURACY, _estimated_accuracy, every, {"probabilities": arrays.probabilities}
        )
    )
    out.append(Figure(REALIZED_ACCURACY, accuracy, arrays.labelled, {}))
    if len(classes) == 2:
        # Each rate's rows are its denominator, so a group's row count says what it rests on.
        positive = arrays.labelled & (arrays.truth == POSITIVE_CLASS)
        out.append(Figure(TRUE_POSITIVE_RATE, true_positive_rate, positive, {}))
        out.append(
            Figure(FALSE_POSITIVE_RATE, false_positive_rate, arrays.labelled & ~positive, {})
        )
    sets = {"prediction_sets": arrays.sets}
    out.append(Figure(CONFORMAL_COVERAGE, conformal_coverage, arrays.in_sets, sets))
    out.append(Figure(MEAN_SET_SIZE, mean_set_size, arrays.in_sets, sets))
    return out


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def estimate(
    figure: Figure, group: NDArray[np.bool_], arrays: WindowArrays, settings: FairnessSettings
) -> Estimate:
    """One figure of one group, with its bootstrap interval.

    Above ``settings.bootstrap_rows`` rows the interval resamples a seeded sample of that many
    rows: B resamples of N rows cost B x N, and the wider interval errs on the safe side.
    """
    rows = np.flatnonzero(group & figure.rows)
    truth, predicted = arrays.truth[rows], arrays.predicted[rows]
    params = {k: v[rows] for k, v in figure.params.items()}
    if len(rows) == 0:
        return Estimate(value=None, low=None, high=None, rows=0)
    value = figure.metric(truth, predicted, **params)
    sample = np.arange(len(rows))
    if len(rows) > settings.bootstrap_rows:
        rng = np.random.default_rng(settings.seed)
        sample = np.sort(rng.choice(len(rows), size=settings.bootstrap_rows, replace=False))
    low, high = bootstrap_interval(
        figure.metric,
        truth[sample],
        predicted[sample],
        seed=settings.seed,
        resamples=settings.resamples,
        **{k: v[sample] for k, v in params.items()},
    )
    return Estimate(value=_finite(value), low=_finite(low), high=_finite(high), rows=len(rows))


def disparities(groups: dict[str, GroupFigures]) -> dict[str, Disparity]:
    """Per figure, the largest gap between the groups whose figure rests on enough rows."""
    names = dict.fromkeys(f for g in groups.values() for f in g.figures)
    out: dict[str, Disparity] = {}
    for name in names:
        values = {
            group: e.value
            for group, figures in groups.items()
            if (e := figures.figures.get(name)) is not None
            and e.value is not None
            and not too_small(e.rows)
        }
        gap = between_groups(values)
        if math.isfinite(gap.difference):
            out[name] = Disparity(
                difference=gap.difference,
                ratio=gap.ratio,
                lowest=min(values, key=lambda g: values[g]),
                highest=max(values, key=lambda g: values[g]),
            )
    return out


def sensitive_values(current: pd.DataFrame, column: SensitiveColumn) -> pd.Series | None:
    """The window's values of a sensitive column: the logged feature, or the logged context
    attribute; None when the window has no such column."""
    name = column.name if column.source == "feature" else context_column(column.name)
    return current[name] if name in current.columns else None


def sensitive_figures(
    column: SensitiveColumn,
    values: pd.Series | None,
    arrays: WindowArrays,
    figures: list[Figure],
    settings: FairnessSettings,
) -> SensitiveFigures:
    """Every group of one sensitive column: the manifest's, then each bucket that has rows."""
    n = len(arrays.predicted)
    labels = group_labels(
        [None] * n if values is None else values.to_numpy(dtype=object), column.groups
    )
    present = set(labels.tolist())
    order = [*column.groups, *(g for g in RESERVED_GROUPS if g in present)]
    groups: dict[str, GroupFigures] = {}
    for group in order:
        rows = labels == group
        count = int(rows.sum())
        small = too_small(count)
        groups[group] = GroupFigures(
            rows=count,
            labelled_rows=int((rows & arrays.labelled).sum()),
            too_small=small,
            figures={} if small else {f.name: estimate(f, rows, arrays, settings) for f in figures},
        )
    return SensitiveFigures(source=column.source, groups=groups, disparity=disparities(groups))


@dataclass(frozen=True)
class FairnessSettings:
    """How the intervals are drawn: resamples, the most rows resampled, and the seed."""

    resamples: int
    bootstrap_rows: int
    seed: int


def fairness_figures(
    current: pd.DataFrame,
    manifest: Manifest,
    reference_version: int,
    settings: FairnessSettings,
) -> tuple[FairnessFigures | None, list[str]]:
    """Figures per sensitive column of the bundle (None when it names none), and notes for
    ``warnings`` (a sensitive column the window does not hold)."""
    if not manifest.sensitive:
        return None, []
    arrays = window_arrays(current, manifest, reference_version)
    figures = figures_of(arrays, list(manifest.classes))
    notes: list[str] = []
    columns: dict[str, SensitiveFigures] = {}
    for column in manifest.sensitive:
        values = sensitive_values(current, column)
        if values is None:
            logged = column.name if column.source == "feature" else context_column(column.name)
            notes.append(
                f"sensitive column {column.name!r} ({column.source}) has no column {logged!r} "
                "in the log window: every row counts in its 'missing' group"
            )
        columns[column.name] = sensitive_figures(column, values, arrays, figures, settings)
    return (
        FairnessFigures(
            min_group_rows=MIN_GROUP_SIZE,
            confidence=BOOTSTRAP_LEVEL,
            bootstrap_rows=settings.bootstrap_rows,
            columns=columns,
        ),
        notes,
    )
