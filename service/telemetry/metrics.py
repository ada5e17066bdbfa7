"""Every Prometheus metric of ``probserve serve``: name, unit, labels and buckets, defined once.

Dashboards, alert rules and the README read these names; change one and they break
(tests/monitoring checks every dashboard query against a real Prometheus). Labels stay bounded:
model, version, protocol, endpoint (a route name), status class, error type, class label; never a
feature value or a request id.

With ``--workers N`` each worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode) and ``/metrics`` in any worker reports the sum over all
of them; gauges say how they combine across workers (``multiprocess_mode``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

#: Environment variable that turns on prometheus-client's multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Seconds: from 25 us (an idle batch-1 request) to 10 s (a huge request under load).
LATENCY_BUCKETS = (
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Rows per ONNX call: powers of two up to the largest batch size setting's usual range.
#: Explanations take tens of milliseconds to seconds (Shapley values cost many model rows).
EXPLAIN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
#: Width of the predicted class's interval, a probability difference in (0, 1).
WIDTH_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
#: Classes in a conformal prediction set (0 is possible: an empty set means "none fits").
SET_SIZE_BUCKETS = (0, 1, 2, 3, 4, 5, 7, 10, 20, 50, 100)

MODEL_VERSION = ("model", "version")

#: The prediction log's row outcomes (service.predlog reports them).
LOG_OUTCOMES = ("queued", "written", "spooled", "replayed", "dropped", "failed")


# prometheus-client has no bulk API for histograms. The helpers below are the one place that
# reaches into a Histogram child: ``_upper_bounds`` (its bounds, +Inf last), ``_buckets`` (one
# ValueClass per bucket, non-cumulative) and ``_sum``, of prometheus-client 0.23 (pinned). The
# ValueClass ``inc`` takes the same lock and writes the same mmap entry as ``observe`` does, in
# single-process and multiprocess mode alike. tests/service/test_metrics*.py check the
# exposition against per-value ``observe``.


def histogram_bounds(child: Any) -> tuple[float, ...]:
    """A histogram child's bucket upper bounds, +Inf last."""
    return tuple(child._upper_bounds)


def bucket_counts(
    bounds: Sequence[float], values: NDArray[np.floating[Any]] | NDArray[np.integer[Any]]
) -> tuple[list[int], float]:
    """Per-bucket counts and the sum of ``values``, bucketed as ``Histogram.observe`` does.

    A value goes to the first bucket whose bound is >= it; NaN goes to none but adds to the sum.
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        return [0] * len(bounds), 0.0
    # side="left": the first bound >= v, as observe's "v <= bound". NaN sorts past +Inf, so
    # the extra last count (dropped) holds it.
    index = np.searchsorted(np.asarray(bounds), flat, side="left")
    counts = np.bincount(index, minlength=len(bounds) + 1)
    return counts[: len(bounds)].tolist(), float(flat.sum())


def add_to_histogram(child: Any, counts: Sequence[int], total: float) -> None:
    """Add bucket counts (non-cumulative, one per bound) and their sum to a histogram child."""
    buckets = child._buckets
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)
    # NaN is truthy: a NaN sum reaches the child, as observe(nan) would make it.
    if total:
        child._sum.inc(total)


def observe_many(child: Any, values: NDArray[np.floating[Any]] | NDArray[np.integer[Any]]) -> None:
    """Observe every value into one histogram child: one increment per non-empty bucket.

    Same samples as ``child.observe(v)`` for each ``v``, without the per-value lock and loop.
    """
    add_to_histogram(child, *bucket_counts(histogram_bounds(child), values))


def multiprocess_dir() -> str | None:
    """The multiprocess directory when that mode is on, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


class ServiceMetrics:
    """The service's metric objects; one per app (tests build many apps in one process)."""

    def __init__(self) -> None:
        """Register every metric on a fresh registry (or the multiprocess files)."""
        shared = multiprocess_dir() is not None
        # In multiprocess mode samples go to files and the registry is built per scrape.
        self.registry: CollectorRegistry | None = None if shared else CollectorRegistry()
        r = self.registry
        if r is not None:
            ProcessCollector(registry=r)  # process_resident_memory_bytes and friends
        self.request_duration = Histogram(
            "probserve_request_duration_seconds",
            "HTTP request duration, from the first byte read to the answer built.",
            ("model", "version", "protocol", "endpoint", "code"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "probserve_inference_duration_seconds",
            "Duration of one ONNX Runtime call (one dynamic batch).",
            MODEL_VERSION,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "probserve_queue_wait_seconds",
            "Time a request waited in its model's batch queue before its batch ran.",
            MODEL_VERSION,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "probserve_batch_rows",
            "Rows in one ONNX Runtime call.",
            MODEL_VERSION,
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "probserve_requests_in_flight",
            "Requests being served now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.errors = Counter(
            "probserve_errors_total",
            "Requests answered with an error, by error type.",
            ("model", "type"),
            registry=r,
        )
        self.explain_duration = Histogram(
            "probserve_explain_duration_seconds",
            "Seconds from an explain request's submission to its attributions, queue included.",
            ("model", "version"),
            buckets=EXPLAIN_BUCKETS,
            registry=r,
        )
        # Requests count sheds in probserve_errors_total; rows say how much work was refused.
        self.shed_rows = Counter(
            "probserve_shed_rows_total",
            "Rows refused by load shedding before they were computed, by reason.",
            ("model", "version", "reason"),
            registry=r,
        )
        self.predictions = Counter(
            "probserve_predictions_total",
            "Predicted instances, by predicted class.",
            ("model", "version", "class"),
            registry=r,
        )
        self.interval_width = Histogram(
            "probserve_interval_width",
            "Width of the predicted class's confidence interval, per instance.",
            MODEL_VERSION,
            buckets=WIDTH_BUCKETS,
            registry=r,
        )
        self.set_size = Histogram(
            "probserve_prediction_set_size",
            "Classes in the conformal prediction set, per instance.",
            MODEL_VERSION,
            buckets=SET_SIZE_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "probserve_model_info",
            "1 for each served model version, with its provider and ensemble size.",
            ("model", "version", "provider", "members"),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_loaded_at = Gauge(
            "probserve_model_loaded_timestamp_seconds",
            "When the served model version was loaded (unix seconds).",
            MODEL_VERSION,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.conformal_revision = Gauge(
            "probserve_conformal_revision",
            "Adapted conformal scores the version's sets come from (0: the bundle's own).",
            MODEL_VERSION,
            registry=r,
            multiprocess_mode="livemin",
        )
        self.model_ready = Gauge(
            "probserve_model_ready",
            "1 when the model has a served version, else 0.",
            ("model",),
            registry=r,
            multiprocess_mode="livemin",
        )
        self.load_failures = Counter(
            "probserve_model_load_failures_total",
            "Model versions refused at load (verification, corrupt files).",
            ("model",),
            registry=r,
        )
        self.log_rows = Counter(
            "probserve_prediction_log_rows_total",
            "Prediction-log rows by outcome: queued, written, spooled, replayed, dropped, failed.",
            ("outcome",),
            registry=r,
        )
        # Every outcome exists from the start at 0, so increase() sees the first drop.
        for outcome in LOG_OUTCOMES:
            self.log_rows.labels(outcome)
        self.log_queue_rows = Gauge(
            "probserve_prediction_log_queue_rows",
            "Prediction-log rows waiting in memory for the writer.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.feedback = Counter(
            "probserve_feedback_total",
            "Ground-truth labels received, by outcome: accepted, unknown, invalid.",
            ("model", "outcome"),
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (all workers' figures in multiprocess mode)."""
        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
