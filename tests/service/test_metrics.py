"""``GET /metrics``: every metric the dashboards and alert rules name, moving with real traffic."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.samples import Sample

from service.telemetry.metrics import LATENCY_BUCKETS, MULTIPROC_ENV
from tests.service.conftest import (
    TEST_CLASSES,
    InProcessService,
    ServiceFactory,
    start_live_server,
)
from tests.service.support import ROW, corrupt, samples, value

ROWS = [
    {"x1": 0.3, "x2": 4.0, "colour": "red"},
    {"x1": -1.2, "x2": None, "colour": "blue"},
    {"x1": 2.5, "x2": 8.0, "colour": "purple"},
]


@pytest.fixture
def metered(bundle_repository: Path, service_factory: ServiceFactory) -> InProcessService:
    # A second model whose only version is corrupt: one load failure, never ready.
    (bundle_repository / "broken").mkdir()
    broken = bundle_repository / "broken" / "1"
    shutil.copytree(bundle_repository / "toy" / "1", broken)
    manifest = broken / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"name": "toy"', '"name": "broken"'))
    corrupt(broken)
    return service_factory(bundle_repository)


def test_every_metric_moves_with_traffic(metered: InProcessService) -> None:
    # 3 and 1 rows take the row-by-row path of the per-prediction metrics, 12 rows the bulk one.
    answers = [
        metered.post("/v1/models/toy/predict", json={"instances": ROWS}),
        metered.post("/v1/models/toy/predict", json={"instances": [ROW]}),
        metered.post("/v1/models/toy/predict", json={"instances": ROWS * 4}),
    ]
    assert all(a.status_code == 200 for a in answers)
    assert metered.post("/v1/models/toy/predict", json={"instances": []}).status_code == 400
    assert metered.get("/v1/models/toy").status_code == 200
    scrape = metered.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    found = samples(scrape.text)
    predictions = [p for a in answers for p in a.json()["predictions"]]

    # Requests: three 2xx and one 4xx on the hot path, labelled by model and version.
    duration = "probserve_request_duration_seconds_count"
    assert value(found, duration, endpoint="v1_predict", code="2xx", model="toy", version="1") == 3
    assert value(found, duration, endpoint="v1_predict", code="4xx") == 1
    assert value(found, duration, endpoint="get_model", code="2xx", protocol="v1") == 1
    assert value(found, "probserve_errors_total", model="toy", type="invalid_input") == 1
    assert value(found, "probserve_requests_in_flight") == 1  # the scrape itself

    # Predictions by class: exactly the labels the answers carried.
    for label in TEST_CLASSES:
        expected = sum(1 for p in predictions if p["label"] == label)
        got = value(
            found, "probserve_predictions_total", model="toy", version="1", **{"class": label}
        )
        assert got == expected, label

    # Interval width of the predicted class, and set sizes: counts and sums pin the formula.
    widths = [p["intervals"][p["label"]][1] - p["intervals"][p["label"]][0] for p in predictions]
    assert value(found, "probserve_interval_width_count", model="toy") == len(predictions)
    assert value(found, "probserve_interval_width_sum", model="toy") == pytest.approx(
        sum(widths), abs=1e-6
    )
    sizes = [len(p["prediction_set"]) for p in predictions]
    assert value(found, "probserve_prediction_set_size_sum", model="toy") == sum(sizes)
    assert value(found, "probserve_prediction_set_size_count", model="toy") == len(sizes)

    # Batches: one ONNX call per request here (each arrived alone), rows as sent.
    assert value(found, "probserve_batch_rows_sum", model="toy", version="1") == len(predictions)
    assert value(found, "probserve_inference_duration_seconds_count", model="toy") >= 3
    assert value(found, "probserve_queue_wait_seconds_count", model="toy") == 3

    # Models: the good one served and ready, the corrupt one refused and not ready.
    info = [s for s in found if s.name == "probserve_model_info" and s.labels["model"] == "toy"]
    assert [(s.labels["version"], s.labels["provider"], s.value) for s in info] == [
        ("1", "CPUExecutionProvider", 1.0)
    ]
    assert info[0].labels["members"] == "4"
    assert value(found, "probserve_model_ready", model="toy") == 1
    assert value(found, "probserve_model_load_failures_total", model="broken") == 1
    assert value(found, "probserve_model_loaded_timestamp_seconds", model="toy") > 1.7e9
    # The process collector is there for RSS panels.
    assert value(found, "process_resident_memory_bytes") > 0


def test_latency_buckets_reach_from_microseconds_to_seconds() -> None:
    # A batch-1 request takes ~100 us here, a huge one seconds: both must land in a real bucket.
    assert LATENCY_BUCKETS[0] <= 50e-6
    assert LATENCY_BUCKETS[-1] >= 5.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_metrics_off_answers_404(bundle_repository: Path, service_factory: ServiceFactory) -> None:
    service = service_factory(bundle_repository, metrics=False)
    assert service.get("/metrics").status_code == 404
    assert service.post("/v1/models/toy/predict", json={"instances": [ROW]}).status_code == 200


@pytest.fixture
def two_workers(bundle_repository: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    directory = tmp_path / "metrics"
    server = start_live_server(
        bundle_repository,
        tmp_path / "server.log",
        "--workers",
        "2",
        PROBSERVE_PREDICTION_LOG_URL="none",
        **{MULTIPROC_ENV: str(directory)},
    )
    yield server.url, directory
    server.stop()


@pytest.mark.slow
def test_two_workers_add_up(two_workers: tuple[str, Path]) -> None:
    url, directory = two_workers
    sent = 60
    for _ in range(sent):
        # A new connection per request, so the kernel spreads them over both workers.
        with httpx.Client(base_url=url, timeout=10) as client:
            answer = client.post("/v1/models/toy/predict", json={"instances": [ROW]})
            assert answer.status_code == 200
    pids = {m.group(1) for f in os.listdir(directory) if (m := re.search(r"_(\d+)\.db$", f))}
    assert len(pids) >= 2, (
        f"both workers must have written samples: {sorted(os.listdir(directory))}"
    )

    def scrape() -> tuple[float, float, list[Sample]]:
        with httpx.Client(base_url=url, timeout=10) as client:
            found = samples(client.get("/metrics").text)
        requests = value(
            found, "probserve_request_duration_seconds_count", endpoint="v1_predict", code="2xx"
        )
        return requests, value(found, "probserve_predictions_total", model="toy"), found

    # The worker that answers a scrape folds its own tallies first; the other one's last
    # requests reach the files with its next periodic fold (every 100 ms).
    deadline = time.monotonic() + 2.0
    while (counts := scrape())[:2] != (sent, sent):
        assert counts[0] <= sent and counts[1] <= sent, counts[:2]
        assert time.monotonic() < deadline, f"not every request counted in 2 s: {counts[:2]}"
        time.sleep(0.05)
    # Then whichever worker answers the scrape, it reports the sum over both.
    for _ in range(6):
        count, predicted, found = scrape()
        assert (count, predicted) == (sent, sent)
        assert value(found, "probserve_model_ready", model="toy") == 1
    assert np.isfinite(count)


def test_observe_many_gives_the_samples_of_one_observe_per_value() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from service.telemetry.metrics import SET_SIZE_BUCKETS, WIDTH_BUCKETS, observe_many

    # Values on bucket bounds (which belong to that bucket), between them, below the first,
    # past the last finite one (+Inf only), repeated ones and an empty call.
    cases = {
        WIDTH_BUCKETS: [0.01, 0.0100001, 0.0, 0.1, 0.1, 0.35, 1.0, 1.5, 0.999],
        SET_SIZE_BUCKETS: [0, 0, 1, 2, 6, 7, 100, 101],
    }
    for buckets, values in cases.items():
        one, many = CollectorRegistry(), CollectorRegistry()
        by_one = Histogram("h", "h", ["m"], buckets=buckets, registry=one).labels("a")
        by_many = Histogram("h", "h", ["m"], buckets=buckets, registry=many).labels("a")
        for v in values:
            by_one.observe(v)
        observe_many(by_many, np.asarray(values))
        observe_many(by_many, np.asarray([], dtype=np.float64))

        def shown(registry: CollectorRegistry) -> list[Sample]:
            text = generate_latest(registry).decode()
            return [x for x in samples(text) if not x.name.endswith("_created")]

        assert shown(many) == shown(one)
        if buckets is WIDTH_BUCKETS:
            # Hand-counted: 0.0 and 0.01 in le=0.01; 0.0100001 in le=0.02; 1.5 only in +Inf.
            found = samples(generate_latest(many).decode())
            assert value(found, "h_bucket", le="0.01") == 2
            assert value(found, "h_bucket", le="0.02") == 3
            assert value(found, "h_bucket", le="1.0") == 8
            assert value(found, "h_bucket", le="+Inf") == 9
            assert value(found, "h_sum") == pytest.approx(sum(values))
