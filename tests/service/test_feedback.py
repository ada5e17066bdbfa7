"""The prediction log and ground-truth feedback through the HTTP API, on a real Parquet log."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from service.predlog.reader import read_window
from tests.pg_support import running_postgres
from tests.service.conftest import (
    TEST_CLASSES,
    InProcessService,
    ServiceFactory,
    start_live_server,
)
from tests.service.support import ROW, samples, value


def window(url: str, rows: int, *, labelled: int = 0, timeout_s: float = 15.0) -> pd.DataFrame:
    """The model's logged rows once ``rows`` rows (and ``labelled`` labels) are readable:
    segments are sealed on a short timer in these tests."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            frame = read_window(url, "toy")
        except ValueError:  # nothing sealed yet
            frame = pd.DataFrame()
        found = len(frame)
        labels = int(frame["true_label"].notna().sum()) if found else 0
        if (found >= rows and labels >= labelled) or time.monotonic() > deadline:
            return frame
        time.sleep(0.1)


@pytest.fixture
def logged(
    bundle_repository: Path, service_factory: ServiceFactory, tmp_path: Path
) -> tuple[InProcessService, str]:
    url = str(tmp_path / "predictions")
    service = service_factory(
        bundle_repository,
        prediction_log_url=url,
        prediction_log_spool_dir=tmp_path / "spool",
        prediction_log_segment_seconds=0.1,
    )
    return service, url


def test_predictions_are_logged_and_feedback_joins_them(
    logged: tuple[InProcessService, str],
) -> None:
    service, url = logged
    first = service.post(
        "/v1/models/toy/predict",
        json={"instances": [ROW, ROW, ROW]},
        headers={"x-request-id": "r1"},
    )
    second = service.post(
        "/v2/models/toy/infer",
        json={
            "id": "r2",
            "inputs": [
                {"name": "x1", "datatype": "FP32", "shape": [1], "data": [0.5]},
                {"name": "x2", "datatype": "FP32", "shape": [1], "data": [None]},
                {"name": "colour", "datatype": "BYTES", "shape": [1], "data": ["green"]},
            ],
        },
    )
    assert first.status_code == 200 and second.status_code == 200, second.text
    truth = TEST_CLASSES[0]
    answer = service.post(
        "/v1/models/toy/feedback",
        json={
            "labels": [
                {"request_id": "r1", "instance": 0, "label": truth},
                {"request_id": "r1", "instance": 2, "label": TEST_CLASSES[1]},
                {"request_id": "r1", "instance": 3, "label": truth},  # r1 had 3 instances
                {"request_id": "nobody", "instance": 0, "label": truth},
                {"request_id": "r2", "instance": 0, "label": "banana"},
            ]
        },
    )
    assert answer.status_code == 200, answer.text
    # Well-formed labels are stored at once: a columnar log cannot look ids up per call; the
    # drift job's join says which matched.
    assert answer.json() == {"model": "toy", "accepted": 4, "unknown": 0, "invalid": 1}

    rows = window(url, 4, labelled=2)
    columns = (rows["request_id"], rows["instance"], rows["protocol"], rows["version"])
    assert list(zip(*columns, strict=True)) == [
        ("r1", 0, "v1", 1),
        ("r1", 1, "v1", 1),
        ("r1", 2, "v1", 1),
        ("r2", 0, "v2", 1),
    ]
    predictions = first.json()["predictions"]
    assert list(rows["label"][:3]) == [p["label"] for p in predictions]
    assert list(rows["set_size"][:3]) == [len(p["prediction_set"]) for p in predictions]
    assert pd.isna(rows["x2"][3]) and rows["x1"][3] == 0.5  # a missing value stays missing
    assert rows["colour"][3] == "green"
    assert list(rows["true_label"]) == [truth, None, TEST_CLASSES[1], None]
    # r1/3 and nobody/0 name no logged prediction.
    assert rows.attrs["feedback"] == {"matched": 2, "unmatched": 2}

    found = samples(service.get("/metrics").text)
    assert value(found, "probserve_feedback_total", model="toy", outcome="accepted") == 4
    assert value(found, "probserve_feedback_total", model="toy", outcome="invalid") == 1
    assert value(found, "probserve_prediction_log_rows_total", outcome="queued") == 4 + 4
    assert value(found, "probserve_prediction_log_rows_total", outcome="written") == 4 + 4


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "labels"),
        ({"labels": []}, "labels"),
        ({"labels": [{"request_id": "r", "instance": -1, "label": "no"}]}, "instance"),
        ({"labels": [{"request_id": "r", "instance": "0", "label": "no"}]}, "instance"),
        ({"labels": [{"request_id": "r", "instance": 0}]}, "label"),
        ({"labels": [{"request_id": "r", "instance": 0, "label": "no", "x": 1}]}, "x"),
    ],
)
def test_malformed_feedback_is_a_400_naming_the_field(
    logged: tuple[InProcessService, str], body: object, fragment: str
) -> None:
    service, _ = logged
    answer = service.post("/v1/models/toy/feedback", json=body)
    assert answer.status_code == 400, answer.text
    assert fragment in answer.text


def test_an_oversize_feedback_body_is_413(logged: tuple[InProcessService, str]) -> None:
    # HTTP_TEST_SETTINGS limit bodies to 64 KiB, on every route, not only predict/infer.
    service, _ = logged
    label = {"request_id": "r" * 100, "instance": 0, "label": "no"}
    body = {"labels": [label] * 1000}
    answer = service.post("/v1/models/toy/feedback", json=body)
    assert answer.status_code == 413
    assert answer.json()["type"] == "payload_too_large"
    found = samples(service.get("/metrics").text)
    assert value(found, "probserve_feedback_total") == 0


def test_feedback_for_an_unknown_model_is_404(logged: tuple[InProcessService, str]) -> None:
    service, _ = logged
    body = {"labels": [{"request_id": "r", "instance": 0, "label": "no"}]}
    assert service.post("/v1/models/nope/feedback", json=body).status_code == 404


def test_feedback_without_a_log_says_so(
    bundle_repository: Path, service_factory: ServiceFactory
) -> None:
    service = service_factory(bundle_repository, prediction_log_url="none")
    body = {"labels": [{"request_id": "r", "instance": 0, "label": "no"}]}
    answer = service.post("/v1/models/toy/feedback", json=body)
    assert answer.status_code == 503
    assert "prediction log is off" in answer.json()["error"]


def test_sampling_logs_a_share_of_requests(
    bundle_repository: Path, service_factory: ServiceFactory, tmp_path: Path
) -> None:
    url = str(tmp_path / "predictions")
    service = service_factory(
        bundle_repository,
        prediction_log_url=url,
        prediction_log_sample_rate=0.0,
        prediction_log_spool_dir=tmp_path / "spool",
        prediction_log_segment_seconds=0.1,
    )
    for _ in range(5):
        assert service.post("/v1/models/toy/predict", json={"instances": [ROW]}).status_code == 200
    found = samples(service.get("/metrics").text)
    assert value(found, "probserve_predictions_total", model="toy") == 5
    assert value(found, "probserve_prediction_log_rows_total", outcome="queued") == 0
    assert not (tmp_path / "predictions" / "model=toy").exists()


@pytest.mark.slow
def test_sigterm_drains_the_log_before_exit(bundle_repository: Path, tmp_path: Path) -> None:
    # The real server with its defaults: ./predictions/ in its working directory, segments
    # sealed once a minute: only the drain at SIGTERM makes these rows readable this soon.
    server = start_live_server(bundle_repository, tmp_path / "server.log")
    sent = 0
    with httpx.Client(base_url=server.url, timeout=10) as client:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            answer = client.post("/v1/models/toy/predict", json={"instances": [ROW, ROW]})
            assert answer.status_code == 200
            sent += 2
    assert server.stop() == 0
    assert len(read_window(str(tmp_path / "predictions"), "toy")) == sent
    assert not list((tmp_path / "prediction-spool").glob("*.arrows"))


@pytest.mark.slow
def test_feedback_while_the_database_is_down_is_spooled_and_arrives_later(
    bundle_repository: Path, service_factory: ServiceFactory, tmp_path: Path
) -> None:
    with running_postgres() as postgres:
        service = service_factory(
            bundle_repository,
            prediction_log_url=postgres.url,
            prediction_log_spool_dir=tmp_path / "spool",
        )
        ok = service.post("/v1/models/toy/predict", json={"instances": [ROW]})
        assert ok.status_code == 200
        postgres.stop()
        request_id = ok.json()["request_id"]
        body = {"labels": [{"request_id": request_id, "instance": 0, "label": TEST_CLASSES[1]}]}
        answer = service.post("/v1/models/toy/feedback", json=body)
        # Accepted: the label waits, fsync'd, in the pending spool until PostgreSQL is back.
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 1
        assert list((tmp_path / "spool").glob("pending-*.arrows"))
        # Predictions still answer: their rows wait in the spool too.
        again = service.post("/v1/models/toy/predict", json={"instances": [ROW]})
        assert again.status_code == 200
        postgres.start()
        deadline = time.monotonic() + 20
        rows = pd.DataFrame()
        while time.monotonic() < deadline:
            try:
                rows = read_window(postgres.url, "toy")
            except ValueError:
                rows = pd.DataFrame()
            if len(rows) == 2 and rows["true_label"].notna().sum() == 1:
                break
            time.sleep(0.2)
        assert len(rows) == 2
        assert list(rows["true_label"]) == [TEST_CLASSES[1], None]
