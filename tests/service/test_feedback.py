"""The prediction log and ground-truth feedback through the HTTP API, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.pg_support import running_postgres
from tests.service.conftest import (
    TEST_CLASSES,
    InProcessService,
    ServiceFactory,
    start_live_server,
)
from tests.service.test_http_routes import ROW
from tests.service.test_metrics import samples, value


def log_url(path: Path) -> str:
    return f"sqlite:///{path}"


def count_rows(database: Path, table: str = "predictions") -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute(f"select count(*) from {table}").fetchone()[0])


@pytest.fixture
def logged(
    bundle_repository: Path, service_factory: ServiceFactory, tmp_path: Path
) -> tuple[InProcessService, Path]:
    database = tmp_path / "log.sqlite"
    service = service_factory(
        bundle_repository,
        prediction_log_url=log_url(database),
        prediction_log_spool_dir=tmp_path / "spool",
    )
    return service, database


def test_predictions_are_logged_and_feedback_joins_them(
    logged: tuple[InProcessService, Path],
) -> None:
    service, database = logged
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
    assert answer.json() == {"model": "toy", "accepted": 2, "unknown": 2, "invalid": 1}

    assert count_rows(database) == 4
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "select request_id, instance, protocol, version, label, set_size, features "
            "from predictions order by logged_at, instance"
        ).fetchall()
        labels = connection.execute(
            "select request_id, instance, label from feedback order by instance"
        ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("r1", 0, "v1", 1),
        ("r1", 1, "v1", 1),
        ("r1", 2, "v1", 1),
        ("r2", 0, "v2", 1),
    ]
    predictions = first.json()["predictions"]
    assert [r[4] for r in rows[:3]] == [p["label"] for p in predictions]
    assert [r[5] for r in rows[:3]] == [len(p["prediction_set"]) for p in predictions]
    assert '"x2": null' in rows[3][6].replace('":null', '": null')  # a missing value stays null
    assert labels == [("r1", 0, truth), ("r1", 2, TEST_CLASSES[1])]

    found = samples(service.get("/metrics").text)
    assert value(found, "probserve_feedback_total", model="toy", outcome="accepted") == 2
    assert value(found, "probserve_feedback_total", model="toy", outcome="unknown") == 2
    assert value(found, "probserve_feedback_total", model="toy", outcome="invalid") == 1
    assert value(found, "probserve_prediction_log_rows_total", outcome="queued") == 4
    assert value(found, "probserve_prediction_log_rows_total", outcome="written") == 4


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
    logged: tuple[InProcessService, Path], body: object, fragment: str
) -> None:
    service, _ = logged
    answer = service.post("/v1/models/toy/feedback", json=body)
    assert answer.status_code == 400, answer.text
    assert fragment in answer.text


def test_an_oversize_feedback_body_is_413(logged: tuple[InProcessService, Path]) -> None:
    # HTTP_TEST_SETTINGS limit bodies to 64 KiB, on every route, not only predict/infer.
    service, _ = logged
    label = {"request_id": "r" * 100, "instance": 0, "label": "no"}
    body = {"labels": [label] * 1000}
    answer = service.post("/v1/models/toy/feedback", json=body)
    assert answer.status_code == 413
    assert answer.json()["type"] == "payload_too_large"
    found = samples(service.get("/metrics").text)
    assert value(found, "probserve_feedback_total") == 0


def test_feedback_for_an_unknown_model_is_404(logged: tuple[InProcessService, Path]) -> None:
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
    database = tmp_path / "log.sqlite"
    service = service_factory(
        bundle_repository,
        prediction_log_url=log_url(database),
        prediction_log_sample_rate=0.0,
        prediction_log_spool_dir=tmp_path / "spool",
    )
    for _ in range(5):
        assert service.post("/v1/models/toy/predict", json={"instances": [ROW]}).status_code == 200
    found = samples(service.get("/metrics").text)
    assert value(found, "probserve_predictions_total", model="toy") == 5
    assert value(found, "probserve_prediction_log_rows_total", outcome="queued") == 0
    assert count_rows(database) == 0


@pytest.mark.slow
def test_sigterm_drains_the_log_before_exit(bundle_repository: Path, tmp_path: Path) -> None:
    # The real server with its defaults: ./predictions.sqlite in its working directory.
    server = start_live_server(bundle_repository, tmp_path / "server.log")
    sent = 0
    with httpx.Client(base_url=server.url, timeout=10) as client:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            answer = client.post("/v1/models/toy/predict", json={"instances": [ROW, ROW]})
            assert answer.status_code == 200
            sent += 2
    assert server.stop() == 0
    assert count_rows(tmp_path / "predictions.sqlite") == sent


@pytest.mark.slow
def test_feedback_while_the_database_is_down_is_a_503_and_serving_goes_on(
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
        body = {"labels": [{"request_id": ok.json()["request_id"], "instance": 0, "label": "no"}]}
        answer = service.post("/v1/models/toy/feedback", json=body)
        assert answer.status_code == 503, answer.text
        assert "unreachable" in answer.json()["error"]
        # Predictions still answer: their rows wait in the spool.
        again = service.post("/v1/models/toy/predict", json={"instances": [ROW]})
        assert again.status_code == 200
