"""Every drift metric, defined once; the job pushes them, the monitor serves them.

Labels stay bounded: model, column (the bundle's compared or sensitive columns), method, window,
reason, group (a sensitive column's manifest groups plus the ``other`` and ``missing`` buckets),
class (the bundle's classes) and figure (the fairness figures' names).
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import push_to_gateway

from monitoring.drift.fairness import (
    ESTIMATED_ACCURACY,
    REALIZED_ACCURACY,
    SELECTION_RATE_PREFIX,
)
from monitoring.drift.summary import DriftSummary, FairnessFigures
from service.fairness import MIN_GROUP_SIZE

#: Pushgateway job name of ``probserve drift run --pushgateway``.
PUSH_JOB = "probserve_drift"


class DriftMetrics:
    """The drift gauges and counters in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.score = Gauge(
            "probserve_drift_score",
            "Drift score of a compared column (p-value or distance; see method)",
            ["model", "column", "method"],
            registry=r,
        )
        self.detected = Gauge(
            "probserve_drift_detected", "1 when the column drifted", ["model", "column"], registry=r
        )
        self.share = Gauge(
            "probserve_drift_share", "Share of compared columns that drifted", ["model"], registry=r
        )
        self.dataset = Gauge(
            "probserve_dataset_drift", "1 when the dataset drifted", ["model"], registry=r
        )
        self.estimated = Gauge(
            "probserve_estimated_accuracy",
            "Label-free accuracy estimate: mean top-class probability of the window",
            ["model"],
            registry=r,
        )
        self.realized = Gauge(
            "probserve_realized_accuracy",
            "Accuracy on the window's rows that have feedback labels",
            ["model"],
            registry=r,
        )
        self.reference_accuracy = Gauge(
            "probserve_reference_accuracy",
            "The bundle's test-split accuracy (manifest metrics)",
            ["model"],
            registry=r,
        )
        self.width = Gauge(
            "probserve_mean_interval_width",
            "Mean interval width of the predicted class",
            ["model", "window"],
            registry=r,
        )
        self.ambiguous = Gauge(
            "probserve_ambiguous_share",
            "Share of prediction sets holding more than one class",
            ["model", "window"],
            registry=r,
        )
        self.set_coverage = Gauge(
            "probserve_conformal_set_coverage",
            "Share of the window's labelled rows whose prediction set held the true class, for "
            "the sets of the bundle's scores (static) or the adapted ones in use",
            ["model", "sets"],
            registry=r,
        )
        self.set_size = Gauge(
            "probserve_conformal_set_size",
            "Mean prediction-set size over the window's labelled rows (static or adapted sets)",
            ["model", "sets"],
            registry=r,
        )
        self.rows = Gauge(
            "probserve_drift_rows", "Rows of the compared window", ["model"], registry=r
        )
        self.last_success = Gauge(
            "probserve_drift_last_success_timestamp_seconds",
            "Unix time of the last successful drift run",
            ["model"],
            registry=r,
        )
        self.group_rows = Gauge(
            "probserve_fairness_group_rows",
            "Rows of the window in a group of a sensitive column (a group under "
            f"{MIN_GROUP_SIZE} rows is too small: no figures)",
            ["model", "column", "group"],
            registry=r,
        )
        self.group_selection_rate = Gauge(
            "probserve_fairness_selection_rate",
            "Share of a group's rows predicted as the class",
            ["model", "column", "group", "class"],
            registry=r,
        )
        self.group_estimated = Gauge(
            "probserve_fairness_estimated_accuracy",
            "Label-free accuracy estimate of a group: its mean top-class probability",
            ["model", "column", "group"],
            registry=r,
        )
        self.group_realized = Gauge(
            "probserve_fairness_realized_accuracy",
            "Accuracy on a group's rows that have feedback labels",
            ["model", "column", "group"],
            registry=r,
        )
        self.disparity = Gauge(
            "probserve_fairness_disparity",
            "Largest difference of a figure between the groups of a sensitive column that have "
            "enough rows (highest minus lowest)",
            ["model", "column", "figure"],
            registry=r,
        )
        #: The fairness series each model set last, removed before its next run sets its own:
        #: a group that leaves the window must not keep its old figure.
        self._fairness_series: dict[str, list[tuple[Gauge, tuple[str, ...]]]] = {}
        self.failures = Counter(
            "probserve_drift_failures",
            "Failed drift runs by reason",
            ["model", "reason"],
            registry=r,
        )

    def record(
        self, summary: DriftSummary, *, reference_accuracy: float | None, finished_at: float
    ) -> None:
        """Set every gauge of ``summary.model`` from one successful run."""
        model = summary.model
        for column, verdict in summary.columns.items():
            self.score.labels(model, column, verdict.method).set(verdict.score)
            self.detected.labels(model, column).set(float(verdict.drift_detected))
        self.share.labels(model).set(summary.share_drifted)
        self.dataset.labels(model).set(float(summary.dataset_drift))
        self.estimated.labels(model).set(summary.estimated_accuracy)
        _set_or_drop(self.realized, (model,), summary.realized_accuracy)
        _set_or_drop(self.reference_accuracy, (model,), reference_accuracy)
        for window in ("reference", "current"):
            _set_or_drop(self.width, (model, window), getattr(summary.mean_interval_width, window))
            _set_or_drop(self.ambiguous, (model, window), getattr(summary.ambiguous_share, window))
        conformal = summary.conformal
        for sets in ("static", "adapted"):
            coverage = size = None
            if conformal is not None:
                coverage = getattr(conformal, f"{sets}_coverage")
                size = getattr(conformal, f"{sets}_mean_set_size")
            _set_or_drop(self.set_coverage, (model, sets), coverage)
            _set_or_drop(self.set_size, (model, sets), size)
        self.rows.labels(model).set(summary.rows_current)
        self.last_success.labels(model).set(finished_at)
        self._record_fairness(model, summary.fairness)

    def _record_fairness(self, model: str, fairness: FairnessFigures | None) -> None:
        """Per-group figures (absent for a too-small group or a missing figure) and disparities."""
        for gauge, labels in self._fairness_series.pop(model, []):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        if fairness is None:
            return
        series: list[tuple[Gauge, tuple[str, ...]]] = []
        per_group = {
            ESTIMATED_ACCURACY: self.group_estimated,
            REALIZED_ACCURACY: self.group_realized,
        }

        def put(gauge: Gauge, labels: tuple[str, ...], value: float | None) -> None:
            if value is not None:
                gauge.labels(*labels).set(value)
                series.append((gauge, labels))

        for name, column in fairness.columns.items():
            for group, figures in column.groups.items():
                put(self.group_rows, (model, name, group), float(figures.rows))
                for figure, estimate in figures.figures.items():
                    if figure.startswith(SELECTION_RATE_PREFIX):
                        label = figure.removeprefix(SELECTION_RATE_PREFIX)
                        put(self.group_selection_rate, (model, name, group, label), estimate.value)
                    elif figure in per_group:
                        put(per_group[figure], (model, name, group), estimate.value)
            for figure, gap in column.disparity.items():
                put(self.disparity, (model, name, figure), gap.difference)
        self._fairness_series[model] = series

    def fail(self, model: str, reason: str) -> None:
        """Count one failed run; the gauges keep the last good figures."""
        self.failures.labels(model, reason).inc()


def _set_or_drop(gauge: Gauge, labels: tuple[str, ...], value: float | None) -> None:
    # A missing figure (no feedback yet) is an absent series, never NaN.
    if value is None:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
        return
    gauge.labels(*labels).set(value)


def push(metrics: DriftMetrics, gateway: str, model: str, timeout: float = 10.0) -> None:
    """Push the registry to a Pushgateway, grouped by model (one group per model)."""
    push_to_gateway(
        gateway,
        job=PUSH_JOB,
        registry=metrics.registry,
        grouping_key={"model": model},
        timeout=timeout,
    )
