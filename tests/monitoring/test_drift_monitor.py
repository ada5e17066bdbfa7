"""``drift serve``'s monitor: schedule, /metrics and /healthz over real HTTP, last good figures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest

from monitoring.drift.computing import NotEnoughRows, compute_drift
from monitoring.drift.job import JobOutcome
from monitoring.drift.monitor import Monitor, metrics_server
from monitoring.drift.settings import DriftSettings, parse_duration
from service.errors import UsageError
from tests.monitoring.conftest import DriftBundle
from tests.support import free_port


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("15m", 900.0), ("1h", 3600.0), ("2d", 172800.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "--every") == seconds


@pytest.mark.parametrize("text", ["", "15", "0s", "-1m", "1w", "m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="--every"):
        parse_duration(text, "--every")


class WindowJob:
    """The real computation over windows handed out in turn; ``None`` is a too-small window."""

    def __init__(self, bundle: DriftBundle, windows: list[int | None]) -> None:
        self.bundle = bundle
        self.windows = windows
        self.calls = 0

    def __call__(self, settings: DriftSettings, model: str) -> JobOutcome:
        size = self.windows[min(self.calls, len(self.windows) - 1)]
        self.calls += 1
        if size is None:
            raise NotEnoughRows("2 logged row(s): not enough")
        rng = np.random.default_rng(self.calls)
        current = self.bundle.log_window(rng, size)
        result = compute_drift(self.bundle.manifest, 1, self.bundle.reference(), current, settings)
        return JobOutcome(result.summary, Path("unused"), 0.5, 1000.0 + self.calls)


@pytest.fixture
def served(drift_bundle: DriftBundle) -> Iterator[tuple[str, Monitor]]:
    monitor = Monitor(
        DriftSettings(model_repository=drift_bundle.repository, workspace=None),
        [],
        every=0.2,
        job=WindowJob(drift_bundle, [120, None]),
    )
    port = free_port()
    server = metrics_server(monitor.metrics, "127.0.0.1", port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", monitor
    finally:
        monitor.stop()
        server.shutdown()
        server.server_close()


def test_failed_run_keeps_last_good_figures_and_counts(served: tuple[str, Monitor]) -> None:
    url, monitor = served
    assert monitor.targets() == ["toy"]  # every model in the repository
    assert httpx.get(f"{url}/healthz").text == "ok\n"
    assert monitor.run_model("toy")
    first = httpx.get(f"{url}/metrics").text
    assert 'probserve_drift_rows{model="toy"} 120.0' in first
    assert not monitor.run_model("toy")  # the log shrank below --min-rows
    second = httpx.get(f"{url}/metrics").text
    assert 'probserve_drift_rows{model="toy"} 120.0' in second
    assert 'probserve_drift_last_success_timestamp_seconds{model="toy"} 1001.0' in second
    assert 'probserve_drift_failures_total{model="toy",reason="not_enough_rows"} 1.0' in second
    assert httpx.get(f"{url}/nope").status_code == 404


def test_loop_runs_on_schedule_until_stopped(served: tuple[str, Monitor]) -> None:
    _, monitor = served
    job = monitor.job
    assert isinstance(job, WindowJob)
    thread = threading.Thread(target=monitor.loop)
    thread.start()
    deadline = time.monotonic() + 60
    while job.calls < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    monitor.stop()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert job.calls >= 3


def test_unknown_model_counts_as_bad_input(drift_bundle: DriftBundle) -> None:
    monitor = Monitor(
        DriftSettings(model_repository=drift_bundle.repository, workspace=None), ["ghost"], 60
    )
    assert not monitor.run_model("ghost")
    body = generate_latest(monitor.metrics.registry).decode()
    assert 'probserve_drift_failures_total{model="ghost",reason="bad_input"} 1.0' in body


def test_taken_port_is_a_usage_error() -> None:
    port = free_port()
    first = metrics_server(Monitor(DriftSettings(), [], 60).metrics, "127.0.0.1", port)
    try:
        with pytest.raises(UsageError, match="cannot listen"):
            metrics_server(Monitor(DriftSettings(), [], 60).metrics, "127.0.0.1", port)
    finally:
        first.server_close()
