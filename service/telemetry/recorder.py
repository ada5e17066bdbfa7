"""The server's telemetry: Prometheus metrics and the prediction log behind one interface."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.batching import BatchStats, ShedStats
from service.http.connections import ConnectionCounters
from service.telemetry.events import RequestDone, Telemetry
from service.telemetry.metrics import ServiceMetrics, bucket_counts
from service.telemetry.tallies import CounterTally, HistogramTally, PeriodicFold, Tallies
from service.types import ModelHandle, Prediction

if TYPE_CHECKING:
    from service.predlog import FeedbackCounts, FeedbackLabel, PredictionLog, PredictionRecord

logger = logging.getLogger(__name__)

#: Status code -> the bounded ``code`` label ("2xx", "4xx", ...).
_CODE_CLASS = {status: f"{status // 100}xx" for status in range(100, 600)}


#: Seconds between folds of the per-request tallies into prometheus-client (and at each scrape).
FOLD_INTERVAL_S = 0.1


class ServiceTelemetry(Telemetry):
    """Metrics (when on) and the prediction log (when configured); one per app.

    Per-request figures go to plain tallies (service.telemetry.tallies), folded into the
    prometheus-client children every ``fold_interval_s`` from start() to stop(), and at every
    scrape; model events, feedback and prediction-log rows are rare and go straight to them.
    """

    def __init__(
        self,
        metrics: ServiceMetrics | None,
        prediction_log: PredictionLog | None = None,
        *,
        sample_rate: float = 1.0,
        fold_interval_s: float = FOLD_INTERVAL_S,
        connections: ConnectionCounters | None = None,
    ) -> None:
        """``sample_rate`` is the share of requests whose predictions are logged; the faults
        in ``connections`` (what the HTTP protocol counts) are folded into the error counter."""
        self.metrics = metrics
        self.connections = connections if connections is not None else ConnectionCounters()
        self.prediction_log = prediction_log
        self._sample_rate = sample_rate
        self._tallies = None if metrics is None else Tallies(metrics.in_flight)
        self._folder = PeriodicFold(self.fold, fold_interval_s)
        #: One fold at a time: the periodic thread and a scrape must not add the same delta twice.
        self._fold_lock = threading.Lock()
        self._versions: dict[int, str] = {}
        #: (model, version) -> the model_info label values it was published with.
        self._served: dict[tuple[str, int], tuple[str, str, str, str]] = {}
        # Tallies of labelled children, looked up once: ``labels()`` takes a lock and builds a
        # key on every call, which was a visible share of a small request's CPU. Label sets are
        # bounded.
        self._request_series: dict[tuple[str, int | None, str, str, int], HistogramTally] = {}
        self._error_series: dict[tuple[str, str], CounterTally] = {}
        self._model_series: dict[tuple[str, int], _ModelSeries] = {}
        #: (model, version) -> (inference duration, batch rows) tallies, for every batch.
        self._batch_series: dict[tuple[str, int], tuple[HistogramTally, HistogramTally]] = {}
        #: outcome -> the log-rows child (the writer counts every request's rows).
        self._log_rows: dict[str, Any] = {}
        #: The connection faults already folded into probserve_errors_total.
        self._faults_folded = {"client_gone": 0, "headers_too_large": 0}

    def _version(self, version: int | None) -> str:
        if version is None:
            return ""
        text = self._versions.get(version)
        if text is None:
            text = self._versions[version] = str(version)
        return text

    # -- requests ------------------------------------------------------------------------------

    def request_started(self, endpoint: str) -> None:
        """Count the request in flight."""
        t = self._tallies
        if t is not None:
            t.lock.acquire()
            try:
                t.in_flight += 1
            finally:
                t.lock.release()

    def request_finished(self, done: RequestDone) -> None:
        """Latency by model/version/protocol/endpoint/status class; errors by type."""
        t = self._tallies
        if t is None:
            return
        key = (done.model, done.version, done.protocol, done.endpoint, done.status)
        latency = self._request_series.get(key) or self._request_tally(t, done, key)
        error = None if done.error_type is None else self._error_tally(t, done)
        t.lock.acquire()
        try:
            t.in_flight -= 1
            latency.observe(done.seconds)
            if error is not None:
                error.count += 1
        finally:
            t.lock.release()

    def _request_tally(
        self, t: Tallies, done: RequestDone, key: tuple[str, int | None, str, str, int]
    ) -> HistogramTally:
        """The request-duration tally of a label set seen for the first time (then cached)."""
        assert self.metrics is not None
        child = self.metrics.request_duration.labels(
            done.model,
            self._version(done.version),
            done.protocol,
            done.endpoint,
            _CODE_CLASS.get(done.status, "other"),
        )
        tally = t.histogram(child)
        if len(self._request_series) < _MAX_CACHED_SERIES:
            self._request_series[key] = tally
        return tally

    def _error_tally(self, t: Tallies, done: RequestDone) -> CounterTally:
        """The error counter's tally of the request's model and error type."""
        assert self.metrics is not None and done.error_type is not None
        key = (done.model, done.error_type)
        tally = self._error_series.get(key)
        if tally is None:
            tally = t.counter(self.metrics.errors.labels(*key))
            if len(self._error_series) < _MAX_CACHED_SERIES:
                self._error_series[key] = tally
        return tally

    # -- predictions and batches ---------------------------------------------------------------

    def prediction_served(self, prediction: Prediction) -> None:
        """Per-instance figures (class, interval width, set size), then the prediction log."""
        t = self._tallies
        if t is not None:
            handle = prediction.handle
            series = self._model_series.get((handle.name, handle.version)) or self._series(
                t, handle
            )
            if len(prediction.uncertainty.label_index) <= _SMALL_REQUEST_ROWS:
                _observe_few(t, series, prediction)
            else:
                _observe_bulk(t, series, prediction)
        log = self.prediction_log
        if log is not None and (self._sample_rate >= 1.0 or random.random() < self._sample_rate):
            log.enqueue(_record(prediction))

    def _series(self, t: Tallies, handle: ModelHandle) -> _ModelSeries:
        """The per-prediction tallies of a model version seen for the first time (then cached)."""
        m = self.metrics
        assert m is not None
        version = self._version(handle.version)
        series = _ModelSeries(
            predictions=[
                t.counter(m.predictions.labels(handle.name, version, label))
                for label in handle.manifest.classes
            ],
            interval_width=t.histogram(m.interval_width.labels(handle.name, version)),
            set_size=t.histogram(m.set_size.labels(handle.name, version)),
            queue_wait=t.histogram(m.queue_wait.labels(handle.name, version)),
        )
        self._model_series[(handle.name, handle.version)] = series
        return series

    def batch_ran(self, stats: BatchStats) -> None:
        """Inference time and rows of one ONNX call."""
        t = self._tallies
        if t is None or stats.failed:
            return
        key = (stats.model, stats.version)
        tallies = self._batch_series.get(key) or self._batch_tallies(t, key)
        t.lock.acquire()
        try:
            tallies[0].observe(stats.inference_seconds)
            tallies[1].observe_int(stats.rows)
        finally:
            t.lock.release()

    def explained(self, handle: ModelHandle, rows: int, seconds: float) -> None:
        """Explain duration (rare and slow, so straight to the histogram)."""
        m = self.metrics
        if m is not None:
            m.explain_duration.labels(handle.name, self._version(handle.version)).observe(seconds)

    def requests_shed(self, stats: ShedStats) -> None:
        """Rows refused by load shedding (rare, so straight to the counter)."""
        m = self.metrics
        if m is not None:
            version = self._version(stats.version)
            m.shed_rows.labels(stats.model, version, stats.reason).inc(stats.rows)

    def _batch_tallies(
        self, t: Tallies, key: tuple[str, int]
    ) -> tuple[HistogramTally, HistogramTally]:
        """The (inference duration, batch rows) tallies of a model version (then cached)."""
        m = self.metrics
        assert m is not None
        version = self._version(key[1])
        tallies = (
            t.histogram(m.inference_duration.labels(key[0], version)),
            t.histogram(m.batch_rows.labels(key[0], version)),
        )
        if len(self._batch_series) < _MAX_CACHED_SERIES:
            self._batch_series[key] = tallies
        return tallies

    # -- model events --------------------------------------------------------------------------

    def model_loaded(self, handle: ModelHandle) -> None:
        """Publish the version's info and mark the model ready."""
        m = self.metrics
        if m is None:
            return
        version = self._version(handle.version)
        labels = (handle.name, version, handle.provider, str(handle.manifest.members))
        self._served[(handle.name, handle.version)] = labels
        m.model_info.labels(*labels).set(1)
        m.model_loaded_at.labels(handle.name, version).set(time.time())
        m.model_ready.labels(handle.name).set(1)
        m.load_failures.labels(handle.name)  # exists at 0: alerts see the first failure
        revision = 0 if handle.runtime is None else handle.runtime.conformal.current[1]
        m.conformal_revision.labels(handle.name, version).set(revision)

    def conformal_adopted(self, handle: ModelHandle, revision: int) -> None:
        """Publish the conformal revision the version's sets come from."""
        if self.metrics is not None:
            self.metrics.conformal_revision.labels(handle.name, self._version(handle.version)).set(
                revision
            )

    def model_refused(self, name: str, version: int, reason: str) -> None:
        """Count the refusal."""
        if self.metrics is not None:
            self.metrics.load_failures.labels(name).inc()

    def model_unloaded(self, name: str, version: int) -> None:
        """Zero the version's info; the model is not ready once no version serves."""
        m = self.metrics
        labels = self._served.pop((name, version), None)
        # Only the caches go: the tallies stay with their children, so what they hold is folded.
        self._model_series.pop((name, version), None)
        self._batch_series.pop((name, version), None)
        if m is None or labels is None:
            return
        m.model_info.labels(*labels).set(0)
        if not any(served_name == name for served_name, _ in self._served):
            m.model_ready.labels(name).set(0)

    # -- feedback and lifecycle ----------------------------------------------------------------

    def render_metrics(self) -> tuple[bytes, str] | None:
        """The exposition of this app's metrics (every worker's, in multiprocess mode).

        This worker's tallies are folded first, so a scrape sees every request it finished.
        """
        if self.metrics is None:
            return None
        self.fold()
        return self.metrics.render()

    def fold(self) -> None:
        """Add the tallies and connection faults counted since the last fold to the metrics."""
        t = self._tallies
        if t is None:
            return
        with self._fold_lock:
            t.fold()
            self.fold_connection_faults()

    def fold_connection_faults(self) -> None:
        """Add what the HTTP protocol counted since the last fold to probserve_errors_total.

        The protocol counts in plain integers (it runs below the app and imports no metrics);
        the faults belong to no model, so their ``model`` label is empty. Runs inside a fold
        (which serialises it), never alone.
        """
        m = self.metrics
        if m is None:
            return
        for kind, folded in self._faults_folded.items():
            now = getattr(self.connections, kind)
            if now > folded:
                m.errors.labels("", kind).inc(now - folded)
                self._faults_folded[kind] = now

    async def record_feedback(
        self, model: str, labels: Sequence[FeedbackLabel], classes: Sequence[str]
    ) -> FeedbackCounts | None:
        """Store ground-truth labels against logged predictions; None when the log is off."""
        log = self.prediction_log
        if log is None:
            return None
        counts = await asyncio.to_thread(log.record_feedback, model, labels, set(classes))
        if self.metrics is not None:
            for outcome in ("accepted", "unknown", "invalid"):
                n = getattr(counts, outcome)
                if n:
                    self.metrics.feedback.labels(model, outcome).inc(n)
        return counts

    def count_log_rows(self, outcome: str, rows: int) -> None:
        """The prediction log's writer reports row outcomes here (any thread)."""
        m = self.metrics
        if m is None:
            return
        child = self._log_rows.get(outcome)
        if child is None:  # outcomes are a fixed handful (LOG_OUTCOMES)
            child = self._log_rows[outcome] = m.log_rows.labels(outcome)
        child.inc(rows)
        if self.prediction_log is not None:
            m.log_queue_rows.set(self.prediction_log.queue_rows())

    async def start(self) -> None:
        """Open the prediction log (creates or migrates its tables); start the periodic fold."""
        if self.prediction_log is not None:
            await asyncio.to_thread(self.prediction_log.start)
        if self._tallies is not None:
            self._folder.start()

    async def stop(self) -> None:
        """Drain the prediction log's queue, then stop the periodic fold (folding once more)."""
        if self.prediction_log is not None:
            await asyncio.to_thread(self.prediction_log.stop)
        if self._tallies is not None:
            await asyncio.to_thread(self._folder.stop)


#: A bound on cached request-duration children (the label sets are bounded; this bounds a bug).
_MAX_CACHED_SERIES = 4096


@dataclass(frozen=True, slots=True)
class _ModelSeries:
    """One model version's tallies of the per-prediction metrics."""

    predictions: list[CounterTally]  # by class index, in the manifest's class order
    interval_width: HistogramTally
    set_size: HistogramTally
    queue_wait: HistogramTally


#: Up to this many rows a request's per-prediction metrics are observed one row at a time in
#: plain Python: below it numpy's per-call overhead costs more than the loop (py-spy, 1x32).
_SMALL_REQUEST_ROWS = 8


def _observe_few(t: Tallies, series: _ModelSeries, prediction: Prediction) -> None:
    """Class counts, interval widths and set sizes of a small request, row by row."""
    result = prediction.uncertainty
    # The numpy-to-list conversions happen here, before the lock is taken.
    rows = zip(
        result.label_index.tolist(),
        result.upper.tolist(),
        result.lower.tolist(),
        result.prediction_sets.tolist(),
        strict=True,
    )
    wait = prediction.queue_wait_s
    predictions, widths, sizes = series.predictions, series.interval_width, series.set_size
    t.lock.acquire()
    try:
        for k, up, lo, members in rows:
            predictions[k].count += 1
            widths.observe(up[k] - lo[k])
            sizes.observe_int(members.count(True))
        series.queue_wait.observe(wait)
    finally:
        t.lock.release()


def _observe_bulk(t: Tallies, series: _ModelSeries, prediction: Prediction) -> None:
    """The same figures for a larger request, bucketed in numpy before the lock is taken."""
    result = prediction.uncertainty
    predicted = result.label_index
    classes = np.bincount(predicted, minlength=len(series.predictions)).tolist()
    rows = np.arange(len(predicted))
    widths = result.upper[rows, predicted] - result.lower[rows, predicted]
    width_counts = bucket_counts(series.interval_width.bounds, widths)
    size_counts = bucket_counts(series.set_size.bounds, result.prediction_sets.sum(axis=1))
    wait = prediction.queue_wait_s
    t.lock.acquire()
    try:
        for tally, count in zip(series.predictions, classes, strict=True):
            tally.count += count
        series.interval_width.add(*width_counts)
        series.set_size.add(*size_counts)
        series.queue_wait.observe(wait)
    finally:
        t.lock.release()


def _record(prediction: Prediction) -> PredictionRecord:
    from service.predlog import PredictionRecord

    result = prediction.uncertainty
    handle = prediction.handle
    batch = prediction.request.batch
    return PredictionRecord(
        logged_at=prediction.served_at,
        request_id=prediction.request_id,
        model=handle.name,
        version=handle.version,
        protocol=prediction.protocol,
        classes=handle.manifest.classes,
        features=batch.columns,
        numeric=None if batch.numeric_block is None else (batch.numeric_names, batch.numeric_block),
        probabilities=result.probabilities,
        lower=result.lower,
        upper=result.upper,
        prediction_sets=result.prediction_sets,
        labels=result.labels,
        confidence_level=prediction.request.confidence_level,
        latency_s=prediction.latency_s,
        context=prediction.request.context,
    )
