"""What the Prometheus metrics cost a request: CPU per request of ServiceTelemetry, in-process.

Run: ``.venv/bin/python bench/metrics_cost.py [--requests 200000] [--rounds 5]``.

A real ServiceTelemetry with real ServiceMetrics (prometheus-client) and no prediction log gets
the events one request makes: request_started, batch_ran, prediction_served, request_finished,
built ahead of time with varied latencies, widths and set sizes (so observations spread over the
buckets). Printed: microseconds per request for 1-row and 64-row requests (median of the rounds'
means, one thread: wall time is CPU time here), and the cost of one fold of the pending tallies
into the prometheus-client children. It runs once in-process (single-process mode) and once in a
child process with PROMETHEUS_MULTIPROC_DIR set (``--workers N``: every sample goes to mmap files).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

#: The events of one request, in the order the server reports them.
Request = tuple[Any, Any, Any]
CLASSES = ["no", "yes", "maybe"]
VARIANTS = 1024  # distinct prebuilt requests, cycled


def build_requests(rows: int, seed: int) -> list[Request]:
    """Prebuilt (RequestDone, Prediction, BatchStats) triples of ``rows`` rows each."""
    from service.batching import BatchStats
    from service.bundle.manifest import Manifest
    from service.telemetry.events import RequestDone
    from service.types import FeatureBatch, InferenceRequest, ModelHandle, Prediction, Uncertainty

    rng = np.random.default_rng(seed)
    # Only ``classes`` (and ``members``) are read by the metrics: skip the validation.
    fields: dict[str, Any] = {"classes": CLASSES, "members": 4}
    manifest = Manifest.model_construct(**fields)
    handle = ModelHandle("toy", 1, manifest, "CPUExecutionProvider")
    batch = FeatureBatch(columns={"x1": np.zeros((rows, 1), dtype=np.float32)}, rows=rows)
    request = InferenceRequest(batch, 0.9)
    labels = np.array(CLASSES, dtype=object)
    out: list[Request] = []
    for _ in range(VARIANTS):
        p = rng.dirichlet(np.ones(len(CLASSES)), size=rows)
        half = rng.uniform(0.0, 0.3, size=p.shape)
        index = p.argmax(axis=1)
        uncertainty = Uncertainty(
            p,
            np.clip(p - half, 0, 1),
            np.clip(p + half, 0, 1),
            p > rng.uniform(0.1, 0.4, size=(rows, 1)),
            index,
            labels[index],
        )
        wait = float(rng.lognormal(np.log(50e-6), 1.0))
        latency = float(rng.lognormal(np.log(300e-6), 1.0))
        done = RequestDone("v1_predict", "v1", "toy", 1, 200, latency, None)
        served = Prediction(
            handle, request, uncertainty, "rid", "v1", wait, latency / 3, time.time(), latency
        )
        stats = BatchStats("toy", 1, rows, 1, 0.0, latency / 3, False)
        out.append((done, served, stats))
    return out


def per_request_us(telemetry: object, requests: list[Request], n: int, rounds: int) -> float:
    """Median over rounds of the mean microseconds one request's telemetry calls take."""
    from service.telemetry.recorder import ServiceTelemetry

    assert isinstance(telemetry, ServiceTelemetry)
    started, finished = telemetry.request_started, telemetry.request_finished
    served, ran = telemetry.prediction_served, telemetry.batch_ran
    work = [requests[i % len(requests)] for i in range(n)]
    means = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for done, pred, stats in work:
            started("v1_predict")
            ran(stats)
            served(pred)
            finished(done)
        means.append((time.perf_counter() - t0) / n * 1e6)
        fold(telemetry)  # between rounds, as the periodic fold would
    return statistics.median(means)


def fold(telemetry: object) -> None:
    """Fold pending tallies; a no-op on a recorder without them (to time an older checkout)."""
    folder: Callable[[], None] | None = getattr(telemetry, "fold", None)
    if folder is not None:
        folder()


def fold_us(telemetry: object, requests: list[Request], rounds: int) -> float:
    """Median microseconds of one fold after 1000 requests (100 ms at 10k requests/s)."""
    from service.telemetry.recorder import ServiceTelemetry

    assert isinstance(telemetry, ServiceTelemetry)
    times = []
    for _ in range(rounds):
        for done, pred, stats in requests[:1000]:
            telemetry.request_started("v1_predict")
            telemetry.batch_ran(stats)
            telemetry.prediction_served(pred)
            telemetry.request_finished(done)
        t0 = time.perf_counter()
        fold(telemetry)
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def measure(mode: str, n: int, rounds: int) -> None:
    """Print the figures of this process's prometheus-client mode."""
    from service.telemetry.metrics import ServiceMetrics
    from service.telemetry.recorder import ServiceTelemetry

    for rows, count in ((1, n), (64, max(n // 8, 1000))):
        telemetry = ServiceTelemetry(ServiceMetrics())
        requests = build_requests(rows, seed=rows)
        us = per_request_us(telemetry, requests, count, rounds)
        print(f"{mode:>14}  {rows:>3}-row request: {us:7.2f} us/request (all metrics)")
    telemetry = ServiceTelemetry(ServiceMetrics())
    us = fold_us(telemetry, build_requests(1, seed=7), rounds)
    print(f"{mode:>14}  fold after 1000 1-row requests: {us:7.1f} us")


def main() -> None:
    """Single-process figures here, multiprocess ones in a child process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure("multiprocess", args.requests, args.rounds)
        return
    print(f"python {sys.version.split()[0]}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    measure("single-process", args.requests, args.rounds)
    with tempfile.TemporaryDirectory() as directory:
        # The mode is chosen when prometheus-client is first imported: a fresh process.
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        command = [sys.executable, __file__, "--child", *sys.argv[1:]]
        subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
