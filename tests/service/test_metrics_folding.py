"""Per-request tallies folded into prometheus-client: exact counts, no loss, no double counting.

Real prometheus-client throughout; expected figures are counted by hand (le is inclusive: a value
on a bound belongs to that bucket).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample

from service.batching import BatchStats
from service.bundle.manifest import Manifest
from service.telemetry.events import RequestDone
from service.telemetry.metrics import (
    LATENCY_BUCKETS,
    MULTIPROC_ENV,
    ROW_BUCKETS,
    SET_SIZE_BUCKETS,
    WIDTH_BUCKETS,
    ServiceMetrics,
    bucket_counts,
)
from service.telemetry.recorder import ServiceTelemetry
from service.telemetry.tallies import Tallies
from service.types import FeatureBatch, ModelHandle, Prediction
from tests.service.predictions import prediction_of
from tests.service.support import samples, value

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["no", "yes", "maybe"]
DURATION = "probserve_request_duration_seconds"

#: Latencies on bounds (2.5e-05 twice, 0.001, 10.0), between them (3e-05, 0.0011) and past the
#: last finite bound (12.0: +Inf only).
LATENCIES = [25e-6, 25e-6, 30e-6, 1e-3, 0.0011, 10.0, 12.0]
#: le -> cumulative count of LATENCIES, by hand.
LATENCY_CUMULATIVE = {
    "2.5e-05": 2,
    "5e-05": 3,
    "0.0005": 3,
    "0.001": 4,
    "0.0025": 5,
    "5.0": 5,
    "10.0": 6,
    "+Inf": 7,
}


def done(seconds: float, status: int = 200, error: str | None = None) -> RequestDone:
    """A finished v1 predict request of model toy, version 1."""
    return RequestDone("v1_predict", "v1", "toy", 1, status, seconds, error)


def serve_requests(telemetry: ServiceTelemetry, latencies: list[float]) -> None:
    """One started-and-finished request per latency."""
    for seconds in latencies:
        telemetry.request_started("v1_predict")
        telemetry.request_finished(done(seconds))


def scrape(telemetry: ServiceTelemetry) -> list[Sample]:
    """The samples of a scrape (which folds first)."""
    rendered = telemetry.render_metrics()
    assert rendered is not None
    return samples(rendered[0].decode())


def unfolded(metrics: ServiceMetrics) -> list[Sample]:
    """The samples the prometheus-client children hold now, without folding."""
    return samples(metrics.render()[0].decode())


def ours(found: list[Sample]) -> list[Sample]:
    """The service's samples, without the process collector's (CPU time moves on its own)."""
    return [s for s in found if s.name.startswith("probserve_")]


def plain_sequential_sum(values: list[float]) -> float:
    """Left-to-right float sum, the order Histogram.observe adds in."""
    total = 0.0
    for v in values:
        total += v
    return total


def test_request_latencies_fold_into_exactly_the_hand_counted_buckets() -> None:
    telemetry = ServiceTelemetry(ServiceMetrics())
    serve_requests(telemetry, LATENCIES)
    telemetry.request_started("v1_predict")
    telemetry.request_finished(done(0.002, status=400, error="invalid_input"))
    telemetry.request_started("v1_predict")  # still in flight at the scrape

    found = scrape(telemetry)
    ok = {"endpoint": "v1_predict", "code": "2xx", "model": "toy", "version": "1"}
    for le, count in LATENCY_CUMULATIVE.items():
        assert value(found, f"{DURATION}_bucket", le=le, **ok) == count, le
    assert value(found, f"{DURATION}_count", **ok) == len(LATENCIES)
    # One fold of one tally: the sum is the one observe() would have built, to the last bit.
    assert value(found, f"{DURATION}_sum", **ok) == plain_sequential_sum(LATENCIES)
    assert value(found, f"{DURATION}_bucket", code="4xx", le="0.001") == 0
    assert value(found, f"{DURATION}_bucket", code="4xx", le="0.0025") == 1
    assert value(found, "probserve_errors_total", model="toy", type="invalid_input") == 1
    assert value(found, "probserve_requests_in_flight") == 1


def handle() -> ModelHandle:
    """Model toy version 1 with three classes (only the class list matters to the metrics)."""
    fields: dict[str, Any] = {"classes": CLASSES, "members": 4}
    manifest = Manifest.model_construct(**fields)
    return ModelHandle("toy", 1, manifest, "CPUExecutionProvider")


#: (predicted class, its interval width, prediction set size) per row: widths on a bound
#: (0.01, 1.0) and between bounds (0.011: le=0.02); sizes on bounds 0, 1 and 3.
ROWS = [(1, 0.01, 0), (0, 0.011, 1), (1, 1.0, 3)]


def served(tile: int) -> Prediction:
    """A request of ROWS repeated ``tile`` times, queue wait 50 us."""
    rows = ROWS * tile
    n = len(rows)
    probabilities = np.full((n, 3), 0.1)
    lower = np.zeros((n, 3))
    upper = np.full((n, 3), 0.5)
    sets = np.zeros((n, 3), dtype=bool)
    for i, (k, width, size) in enumerate(rows):
        probabilities[i, k] = 0.8
        upper[i, k] = width
        sets[i, :size] = True
    batch = FeatureBatch(columns={"x1": np.zeros((n, 1), dtype=np.float32)}, rows=n)
    prediction = prediction_of(
        handle(), batch, probabilities, lower=lower, upper=upper, prediction_sets=sets
    )
    return dataclasses.replace(prediction, queue_wait_s=50e-6, served_at=time.time())


def test_predictions_and_batches_fold_into_the_hand_counted_buckets() -> None:
    telemetry = ServiceTelemetry(ServiceMetrics())
    telemetry.prediction_served(served(1))  # 3 rows: row by row
    telemetry.prediction_served(served(4))  # 12 rows: bucketed in numpy
    for rows in (1, 2, 3, 64, 9000):  # on bounds, between, past 8192 (+Inf only)
        telemetry.batch_ran(BatchStats("toy", 1, rows, 1, 0.0, 1e-3, False))
    telemetry.batch_ran(BatchStats("toy", 1, 5, 1, 0.0, 0.0, True))  # failed: not counted

    found = scrape(telemetry)
    toy = {"model": "toy", "version": "1"}
    # 5 copies of ROWS in all: 10 "yes", 5 "no".
    assert value(found, "probserve_predictions_total", **toy, **{"class": "yes"}) == 10
    assert value(found, "probserve_predictions_total", **toy, **{"class": "no"}) == 5
    assert value(found, "probserve_predictions_total", **toy, **{"class": "maybe"}) == 0
    width = "probserve_interval_width_bucket"
    expected_widths = {"0.01": 5, "0.02": 10, "0.8": 10, "1.0": 15, "+Inf": 15}
    for le, count in expected_widths.items():
        assert value(found, width, le=le, **toy) == count, le
    assert value(found, "probserve_interval_width_sum", **toy) == pytest.approx(5 * 1.021)
    size = "probserve_prediction_set_size_bucket"
    for le, count in {"0.0": 5, "1.0": 10, "2.0": 10, "3.0": 15, "+Inf": 15}.items():
        assert value(found, size, le=le, **toy) == count, le
    assert value(found, "probserve_prediction_set_size_sum", **toy) == 20
    assert value(found, "probserve_queue_wait_seconds_bucket", le="2.5e-05", **toy) == 0
    assert value(found, "probserve_queue_wait_seconds_bucket", le="5e-05", **toy) == 2
    batch_rows = "probserve_batch_rows_bucket"
    for le, count in {"1.0": 1, "2.0": 2, "4.0": 3, "64.0": 4, "8192.0": 4, "+Inf": 5}.items():
        assert value(found, batch_rows, le=le, **toy) == count, le
    assert value(found, "probserve_batch_rows_sum", **toy) == 1 + 2 + 3 + 64 + 9000
    assert value(found, "probserve_inference_duration_seconds_count", **toy) == 5


def test_each_fold_adds_only_what_came_since_the_last() -> None:
    metrics = ServiceMetrics()
    telemetry = ServiceTelemetry(metrics)
    ok = {"endpoint": "v1_predict", "code": "2xx"}
    serve_requests(telemetry, LATENCIES)
    first = ours(scrape(telemetry))
    # Folding again with no traffic in between changes nothing: deltas, not totals.
    telemetry.fold()
    telemetry.fold()
    assert ours(scrape(telemetry)) == first
    assert ours(unfolded(metrics)) == first
    serve_requests(telemetry, LATENCIES)
    telemetry.fold()
    serve_requests(telemetry, [1e-3])
    found = scrape(telemetry)
    assert value(found, f"{DURATION}_count", **ok) == 2 * len(LATENCIES) + 1
    assert value(found, f"{DURATION}_bucket", le="0.001", **ok) == 2 * 4 + 1
    assert value(found, f"{DURATION}_bucket", le="10.0", **ok) == 2 * 6 + 1
    assert value(found, f"{DURATION}_sum", **ok) == pytest.approx(
        2 * sum(LATENCIES) + 1e-3, rel=1e-12
    )
    assert value(found, "probserve_requests_in_flight") == 0


def test_tallies_bucket_every_value_as_histogram_observe_does() -> None:
    # NaN (the sum, no bucket), infinities, negatives, bounds, just past them, ints past the
    # int table (9000 > 8192): one tally fold gives observe's exposition, sums included.
    specials = [0.0, -1.0, math.inf, 1e-300, 0.1, 0.10000000000000002, 100.0, 101.0, 9000.0]
    floats = [*specials, *np.random.default_rng(0).lognormal(-3, 3, size=500).tolist()]
    for buckets in (LATENCY_BUCKETS, WIDTH_BUCKETS, SET_SIZE_BUCKETS, ROW_BUCKETS):
        for values in (floats, [*floats, math.nan]):
            by_observe, by_tally = CollectorRegistry(), CollectorRegistry()
            reference = Histogram("h", "h", ["m"], buckets=buckets, registry=by_observe)
            folded = Histogram("h", "h", ["m"], buckets=buckets, registry=by_tally)
            tallies = Tallies(in_flight=_NoGauge())
            tally = tallies.histogram(folded.labels("a"))
            for v in values:
                reference.labels("a").observe(v)
                tally.observe(v)
            ints = [0, 1, 2, 3, 7, 64, 100, 101, 8192, 8193, 9000, -2]
            for n in ints:
                reference.labels("a").observe(n)
                tally.observe_int(n)
            tallies.fold()
            assert nan_equal(shown(by_tally), shown(by_observe)), (buckets, values[-1])


def test_bulk_bucketing_adds_to_the_same_tally_as_single_values() -> None:
    values = np.array([0.0, 0.01, 0.0100001, 0.35, 1.0, 1.5, np.nan])
    by_observe, by_tally = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h", "h", buckets=WIDTH_BUCKETS, registry=by_observe)
    tallies = Tallies(in_flight=_NoGauge())
    tally = tallies.histogram(Histogram("h", "h", buckets=WIDTH_BUCKETS, registry=by_tally))
    for v in values.tolist() * 2:
        reference.observe(v)
    tally.add(*bucket_counts(tally.bounds, values))
    tallies.fold()
    for v in values.tolist():
        tally.observe(v)
    tallies.fold()
    assert nan_equal(shown(by_tally), shown(by_observe))
    assert math.isnan(value(shown(by_tally), "h_sum"))


def test_the_periodic_fold_publishes_without_a_scrape() -> None:
    metrics = ServiceMetrics()
    telemetry = ServiceTelemetry(metrics, fold_interval_s=0.05)
    ok = {"endpoint": "v1_predict", "code": "2xx"}
    asyncio.run(telemetry.start())
    try:
        serve_requests(telemetry, LATENCIES)
        telemetry.request_started("v1_predict")
        wait_until(lambda: value(unfolded(metrics), f"{DURATION}_count", **ok) == 7)
        found = unfolded(metrics)
        for le, count in LATENCY_CUMULATIVE.items():
            assert value(found, f"{DURATION}_bucket", le=le, **ok) == count, le
        wait_until(lambda: value(unfolded(metrics), "probserve_requests_in_flight") == 1)
        serve_requests(telemetry, [1e-3])
    finally:
        asyncio.run(telemetry.stop())
    # stop() folds what came after the last periodic fold.
    assert value(unfolded(metrics), f"{DURATION}_count", **ok) == 8
    time.sleep(0.15)  # the thread is gone: nothing folds any more
    serve_requests(telemetry, [1e-3])
    assert value(unfolded(metrics), f"{DURATION}_count", **ok) == 8


def test_concurrent_writers_and_folds_lose_nothing() -> None:
    metrics = ServiceMetrics()
    telemetry = ServiceTelemetry(metrics)
    writers, per_writer = 4, 150_000
    stop = threading.Event()

    def write() -> None:
        # 0.5 is exact in binary: any lost or doubled add shows in the sum.
        stats = BatchStats("toy", 1, 3, 1, 0.0, 0.5, False)
        for _ in range(per_writer):
            telemetry.batch_ran(stats)

    def fold() -> None:
        while not stop.is_set():
            telemetry.fold()

    # Switch threads as often as the interpreter allows, so unguarded updates would interleave.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    folder = threading.Thread(target=fold)
    threads = [threading.Thread(target=write) for _ in range(writers)]
    try:
        folder.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stop.set()
        folder.join()
        sys.setswitchinterval(interval)
    found = scrape(telemetry)
    n = writers * per_writer
    toy = {"model": "toy", "version": "1"}
    assert value(found, "probserve_inference_duration_seconds_count", **toy) == n
    assert value(found, "probserve_inference_duration_seconds_sum", **toy) == n * 0.5
    assert value(found, "probserve_batch_rows_bucket", le="2.0", **toy) == 0
    assert value(found, "probserve_batch_rows_bucket", le="4.0", **toy) == n
    assert value(found, "probserve_batch_rows_sum", **toy) == 3 * n


#: One worker: a ServiceTelemetry in multiprocess mode that serves the latencies given as
#: arguments (and leaves one request in flight), then waits for a line on stdin before stopping.
#: It never scrapes: only its periodic fold can put the figures in the mmap files.
WORKER = """
import asyncio, sys
from service.telemetry.events import RequestDone
from service.telemetry.metrics import ServiceMetrics
from service.telemetry.recorder import ServiceTelemetry

async def main() -> None:
    telemetry = ServiceTelemetry(ServiceMetrics(), fold_interval_s=0.05)
    await telemetry.start()
    for seconds in sys.argv[1:]:
        telemetry.request_started("v1_predict")
        telemetry.request_finished(
            RequestDone("v1_predict", "v1", "toy", 1, 200, float(seconds), None)
        )
    telemetry.request_started("v1_predict")
    print("served", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await telemetry.stop()

asyncio.run(main())
"""


def test_two_worker_processes_add_up_in_the_combined_exposition(tmp_path: Path) -> None:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {**os.environ, MULTIPROC_ENV: str(directory), "PYTHONPATH": str(ROOT)}
    second = [1e-3, 1e-3, 0.3]  # two on the 0.001 bound, one at le=0.5
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, *map(repr, latencies)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for latencies in (LATENCIES, second)
    ]

    def combined() -> list[Sample]:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
        return samples(generate_latest(registry).decode())

    ok = {"endpoint": "v1_predict", "code": "2xx"}
    total = len(LATENCIES) + len(second)
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "served"
        wait_until(lambda: value(combined(), f"{DURATION}_count", **ok) == total, seconds=10)
        wait_until(lambda: value(combined(), "probserve_requests_in_flight") == 2, seconds=10)
        found = combined()
        assert value(found, f"{DURATION}_bucket", le="0.001", **ok) == 4 + 2
        assert value(found, f"{DURATION}_bucket", le="0.5", **ok) == 5 + 3
        assert value(found, f"{DURATION}_bucket", le="+Inf", **ok) == total
        assert value(found, f"{DURATION}_sum", **ok) == pytest.approx(
            sum(LATENCIES) + sum(second), rel=1e-12
        )
    finally:
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.close()
        codes = [worker.wait(30) for worker in workers]
    assert codes == [0, 0]
    # Stopping folded once more and counted nothing twice.
    assert value(combined(), f"{DURATION}_count", **ok) == total


class _NoGauge:
    """An in-flight gauge for tallies of a bare histogram (nothing to publish)."""

    def set(self, value: float) -> None:
        """Ignore the level."""


def shown(registry: CollectorRegistry) -> list[Sample]:
    """A registry's samples without ``_created`` (a timestamp that differs between metrics)."""
    return [s for s in samples(generate_latest(registry).decode()) if s.name != "h_created"]


def nan_equal(left: list[Sample], right: list[Sample]) -> bool:
    """Equal samples, where a NaN value equals a NaN value (observe(nan) makes the sum NaN)."""

    def key(s: Sample) -> tuple[str, dict[str, str], float | str]:
        return s.name, s.labels, "nan" if math.isnan(s.value) else s.value

    return [key(s) for s in left] == [key(s) for s in right]


def wait_until(condition: Callable[[], bool], seconds: float = 3.0) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
