"""Metadata, health, readiness, model control and docs through the real app in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.batching import BatchStats
from service.telemetry import RequestDone, Telemetry
from service.types import ModelHandle, Prediction
from tests.service.conftest import (
    ADMIN_TOKEN,
    TEST_CLASSES,
    BundleFactory,
    InProcessService,
    ServiceFactory,
    write_test_bundle,
)
from tests.service.support import ROW

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def test_health_and_readiness(service: InProcessService) -> None:
    assert service.get("/healthz").json() == {"status": "alive"}
    assert service.get("/readyz").status_code == 200
    assert service.get("/v2/health/live").status_code == 200
    assert service.get("/v2/health/ready").json() == {"ready": True}


def test_not_ready_without_models(tmp_path: Path, service_factory: ServiceFactory) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    service = service_factory(empty)
    assert service.get("/healthz").status_code == 200
    assert service.get("/readyz").status_code == 503
    assert service.get("/v2/health/ready").status_code == 503


def test_a_refused_bundle_keeps_the_service_not_ready_but_others_serve(
    bundle_factory: BundleFactory, service_factory: ServiceFactory
) -> None:
    good = bundle_factory("good")
    bad = bundle_factory("bad")
    (bad / "model.onnx").write_bytes(b"not a graph")
    service = service_factory(good.parent.parent)
    ready = service.get("/readyz")
    assert ready.status_code == 503
    rows = {row["name"]: row for row in ready.json()["models"]}
    assert rows["good"]["state"] == "READY"
    assert rows["bad"]["state"] == "UNAVAILABLE" and rows["bad"]["reason"]
    response = service.post("/v1/models/good/predict", json={"instances": [ROW]})
    assert response.status_code == 200
    refused = service.post("/v1/models/bad/predict", json={"instances": [ROW]})
    assert refused.status_code == 503
    assert rows["bad"]["reason"] in refused.json()["error"]


def test_v1_metadata(service: InProcessService) -> None:
    listing = service.get("/v1/models").json()["models"]
    assert [m["name"] for m in listing] == ["toy"]
    model = service.get("/v1/models/toy").json()
    assert model["versions"] == [1]
    assert model["classes"] == TEST_CLASSES
    assert [(f["name"], f["kind"]) for f in model["features"]] == [
        ("x1", "numeric"),
        ("x2", "numeric"),
        ("colour", "categorical"),
    ]
    assert model["features"][2]["categories"] == ["blue", "green", "red"]
    assert model["provider"] == "CPUExecutionProvider"
    assert "accuracy" in model["metrics"]
    missing = service.get("/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json()["type"] == "model_not_found"


def test_v1_metadata_example_is_a_request_that_succeeds(service: InProcessService) -> None:
    example = service.get("/v1/models/toy").json()["example"]
    assert set(example["instances"][0]) == {"x1", "x2", "colour"}
    response = service.post("/v1/models/toy/predict", json=example)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == len(example["instances"])


def test_v2_metadata(service: InProcessService) -> None:
    server = service.get("/v2").json()
    assert server["name"] == "probserve"
    assert "model_repository" in server["extensions"]
    for path in ("/v2/models/toy", "/v2/models/toy/versions/1"):
        meta = service.get(path).json()
        assert meta["name"] == "toy"
        assert meta["versions"] == ["1"]
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
            ("x1", "FP32"),
            ("x2", "FP32"),
            ("colour", "BYTES"),
        ]
        assert {o["name"] for o in meta["outputs"]} == {
            "probabilities",
            "lower",
            "upper",
            "label",
            "prediction_set",
        }
    assert service.get("/v2/models/toy/ready").status_code == 200
    assert service.get("/v2/models/toy/versions/1/ready").status_code == 200
    for path in ("/v2/models/nope", "/v2/models/toy/versions/9", "/v2/models/nope/ready"):
        response = service.get(path)
        assert response.status_code == 404
        assert list(response.json()) == ["error"]


def test_unknown_route_is_json_404(service: InProcessService) -> None:
    response = service.get("/v3/everything")
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"


@pytest.mark.parametrize(
    "path",
    ["/v2/repository/index", "/v2/repository/models/toy/load", "/v2/repository/models/toy/unload"],
)
def test_model_control_off_without_a_token(
    bundle_repository: Path, service_factory: ServiceFactory, path: str
) -> None:
    service = service_factory(bundle_repository, admin_token=None)
    for headers in ({}, AUTH):
        response = service.post(path, headers=headers)
        assert response.status_code == 403
        assert "disabled" in response.json()["error"]
    assert service.get("/v2/models/toy/ready").status_code == 200  # nothing was unloaded


@pytest.mark.parametrize(
    "path",
    ["/v2/repository/index", "/v2/repository/models/toy/load", "/v2/repository/models/toy/unload"],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": ADMIN_TOKEN},
        {"authorization": "Basic x"},
    ],
)
def test_model_control_needs_the_token(
    service: InProcessService, path: str, headers: dict[str, str]
) -> None:
    response = service.post(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert service.get("/v2/models/toy/ready").status_code == 200


def test_model_control_index_unload_load(
    service: InProcessService, bundle_repository: Path
) -> None:
    index = service.post("/v2/repository/index", headers=AUTH)
    assert index.status_code == 200
    assert index.json() == [{"name": "toy", "version": "1", "state": "READY", "reason": ""}]

    assert service.post("/v2/repository/models/toy/unload", headers=AUTH).status_code == 200
    gone = service.post("/v1/models/toy/predict", json={"instances": [ROW]})
    assert gone.status_code == 503
    # Its only model unloaded, the replica has nothing to serve and must get no traffic.
    assert service.get("/readyz").status_code == 503
    states = service.post("/v2/repository/index", headers=AUTH).json()
    assert states[0]["state"] == "UNAVAILABLE"

    # A new version appears, and a load call serves it.
    write_test_bundle(bundle_repository, "toy", seed=3)
    assert service.post("/v2/repository/models/toy/load", headers=AUTH).status_code == 200
    body = service.post("/v1/models/toy/predict", json={"instances": [ROW]}).json()
    assert body["version"] == 2

    missing = service.post("/v2/repository/models/nope/load", headers=AUTH)
    assert missing.status_code == 404


def test_docs_and_openapi(service: InProcessService) -> None:
    docs = service.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    schema = service.get("/openapi.json").json()
    for path in (
        "/v1/models/{name}/predict",
        "/v1/models/{name}/versions/{version}/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ):
        assert "post" in schema["paths"][path], path
    for path in ("/v1/models", "/v2/health/ready", "/v2/repository/index", "/readyz"):
        assert path in schema["paths"]


def _example_url(path: str, operation: dict[str, Any]) -> str:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            path = path.replace("{" + parameter["name"] + "}", str(parameter["example"]))
    return path


def test_documented_examples_succeed(service: InProcessService) -> None:
    schema = service.get("/openapi.json").json()
    sent = 0
    for path, operations in schema["paths"].items():
        post = operations.get("post")
        if post is None or not path.endswith(("/predict", "/infer")):
            continue
        example = post["requestBody"]["content"]["application/json"]["example"]
        response = service.post(_example_url(path, post), json=example)
        assert response.status_code == 200, (path, response.text)
        sent += 1
    assert sent == 4


def test_the_hot_routes_are_documented_though_only_the_lean_front_serves_them(
    service: InProcessService,
) -> None:
    """/openapi.json describes the four predict/infer routes; no FastAPI handler shadows them."""
    from starlette.routing import Route

    hot = {
        "/v1/models/{name}/predict",
        "/v1/models/{name}/versions/{version}/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }
    declared = {r.path for r in service.app.fallback.routes if isinstance(r, Route)}
    assert not hot & declared
    paths = service.get("/openapi.json").json()["paths"]
    for path in hot:
        post = paths[path]["post"]
        assert post["requestBody"]["required"] is True
        assert {"200", "400", "404", "413", "503"} <= set(post["responses"])
        names = [p["name"] for p in post["parameters"]]
        assert names == (["name", "version"] if "{version}" in path else ["name"])


class TelemetryRecorder(Telemetry):
    """Telemetry that keeps every event, as metrics and the log would receive them."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[RequestDone] = []
        self.predictions: list[Prediction] = []
        self.batches: list[BatchStats] = []
        self.loaded: list[tuple[str, int]] = []

    def request_started(self, endpoint: str) -> None:
        self.started.append(endpoint)

    def request_finished(self, done: RequestDone) -> None:
        assert done.seconds >= 0
        self.finished.append(done)

    def prediction_served(self, prediction: Prediction) -> None:
        self.predictions.append(prediction)

    def batch_ran(self, stats: BatchStats) -> None:
        self.batches.append(stats)

    def model_loaded(self, handle: ModelHandle) -> None:
        self.loaded.append((handle.name, handle.version))


def test_telemetry_sees_every_request_on_every_route(bundle_repository: Path) -> None:
    from service.http.app import create_app
    from service.settings import Settings
    from tests.service.conftest import HTTP_TEST_SETTINGS

    recorder = TelemetryRecorder()
    settings = Settings(model_repository=bundle_repository, **HTTP_TEST_SETTINGS)
    service = InProcessService(create_app(settings, telemetry=recorder)).start()
    try:
        service.post("/v1/models/toy/predict", json={"instances": [ROW]})
        service.post("/v1/models/toy/predict", json={"instances": []})
        service.post("/v2/models/nope/infer", json={})
        service.get("/v1/models/toy")
        service.get("/healthz")
        service.get("/no/such/route")
        service.post("/v2/models/toy/infer", content=b"x" * (64 * 1024 + 1))
    finally:
        service.close()
    seen = [
        (d.endpoint, d.protocol, d.model, d.version, d.status, d.error_type)
        for d in recorder.finished
    ]
    assert seen == [
        ("v1_predict", "v1", "toy", 1, 200, None),
        ("v1_predict", "v1", "toy", 1, 400, "invalid_input"),
        ("v2_infer", "v2", "", None, 404, "model_not_found"),
        ("get_model", "v1", "", None, 200, None),
        ("healthz", "", "", None, 200, None),
        ("other", "", "", None, 404, None),
        ("v2_infer", "v2", "", None, 413, "payload_too_large"),
    ]
    assert len(recorder.started) == len(recorder.finished)
    assert recorder.loaded == [("toy", 1)]


def test_telemetry_sees_what_was_served_and_each_onnx_call(bundle_repository: Path) -> None:
    from service.http.app import create_app
    from service.settings import Settings
    from tests.service.conftest import HTTP_TEST_SETTINGS

    recorder = TelemetryRecorder()
    settings = Settings(model_repository=bundle_repository, **HTTP_TEST_SETTINGS)
    service = InProcessService(create_app(settings, telemetry=recorder)).start()
    try:
        ok = service.post(
            "/v1/models/toy/predict", json={"instances": [ROW, ROW]}, headers={"x-request-id": "r1"}
        )
        assert ok.status_code == 200
        service.post("/v1/models/toy/predict", json={"instances": []})  # refused: not reported
    finally:
        service.close()
    assert [(p.protocol, p.request_id, p.request.batch.rows) for p in recorder.predictions] == [
        ("v1", "r1", 2)
    ]
    assert [(b.model, b.version, b.rows, b.failed) for b in recorder.batches] == [
        ("toy", 1, 2, False)
    ]


def test_hot_reload_serves_a_new_version_and_refuses_a_corrupt_one(
    bundle_repository: Path, service_factory: ServiceFactory
) -> None:
    import time

    service = service_factory(bundle_repository, poll_interval_s=0.1)
    path = "/v1/models/toy/predict"
    before = service.post(path, json={"instances": [ROW]}).json()
    assert before["version"] == 1

    def served_version() -> int:
        return int(service.post(path, json={"instances": [ROW]}).json()["version"])

    write_test_bundle(bundle_repository, "toy", seed=5)
    deadline = time.monotonic() + 20
    while served_version() != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served_version() == 2

    # Corrupt it before it appears (the poller must never see it intact), then move it in.
    staging = write_test_bundle(bundle_repository.parent / "staging", "toy", seed=6)
    (staging / "model.onnx").write_bytes(b"garbage")
    staging.rename(bundle_repository / "toy" / "3")
    deadline = time.monotonic() + 20
    reason = ""
    while not reason and time.monotonic() < deadline:
        index = service.post("/v2/repository/index", headers=AUTH).json()
        reason = next((r["reason"] for r in index if r.get("version") == "3"), "")
        time.sleep(0.05)
    assert reason, "the corrupt version 3 was never reported"
    assert served_version() == 2  # the version that was serving keeps serving
    assert service.get("/readyz").status_code == 200


def test_a_crash_in_a_fastapi_route_is_a_json_500(
    service: InProcessService, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from service.http import routes

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated metadata bug")

    async def get(url: str) -> httpx.Response:
        # Starlette re-raises after answering (so servers log it); the client must still see
        # the JSON answer, as it does over a real socket.
        transport = httpx.ASGITransport(app=service.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(url, headers={"x-request-id": "crash-1"})

    monkeypatch.setattr(routes, "model_info", broken)
    response = service.run(get("/v1/models/toy"))
    assert response.status_code == 500
    assert response.json()["request_id"] == "crash-1"
    assert "simulated" not in response.text
    assert any("simulated metadata bug" in str(r.exc_info) for r in caplog.records if r.exc_info)
    monkeypatch.undo()
    assert service.get("/v1/models/toy").status_code == 200
