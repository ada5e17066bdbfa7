"""Native and V2 inference through the real app in-process: shapes, invariants, bad input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.service.conftest import TEST_CLASSES, InProcessService

ROWS = [
    {"x1": 0.3, "x2": 4.0, "colour": "red"},
    {"x1": None, "x2": 7.5, "colour": None},
    {"x1": -1.2, "x2": None, "colour": "purple"},
]


def _predict(service: InProcessService, body: Any, path: str = "/v1/models/toy/predict") -> Any:
    response = service.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _check_prediction(prediction: dict[str, Any]) -> None:
    probabilities = prediction["probabilities"]
    assert list(probabilities) == TEST_CLASSES
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    for label, p in probabilities.items():
        lo, hi = prediction["intervals"][label]
        assert 0.0 <= lo <= p <= hi <= 1.0
    assert prediction["label"] == max(probabilities, key=probabilities.__getitem__)
    assert set(prediction["prediction_set"]) <= set(TEST_CLASSES)


@pytest.mark.parametrize("path", ["/v1/models/toy/predict", "/v1/models/toy/versions/1/predict"])
def test_native_predict_shape_and_invariants(service: InProcessService, path: str) -> None:
    response = service.post(path, json={"instances": ROWS}, headers={"x-request-id": "req-42"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-42"
    body = response.json()
    assert body["model"] == "toy"
    assert body["version"] == 1
    assert body["confidence_level"] == 0.95
    assert body["request_id"] == "req-42"
    assert len(body["predictions"]) == len(ROWS)
    for prediction in body["predictions"]:
        _check_prediction(prediction)


def test_native_predict_generates_request_ids(service: InProcessService) -> None:
    first = _predict(service, {"instances": ROWS[:1]})["request_id"]
    second = _predict(service, {"instances": ROWS[:1]})["request_id"]
    assert first and second and first != second


def test_higher_level_gives_wider_intervals_and_larger_sets(service: InProcessService) -> None:
    low = _predict(service, {"instances": ROWS, "confidence_level": 0.5})
    high = _predict(service, {"instances": ROWS, "confidence_level": 0.999})
    assert low["confidence_level"] == 0.5
    for a, b in zip(low["predictions"], high["predictions"], strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"])
        assert set(a["prediction_set"]) <= set(b["prediction_set"])
        for label in TEST_CLASSES:
            (lo_a, hi_a), (lo_b, hi_b) = a["intervals"][label], b["intervals"][label]
            assert lo_b <= lo_a and hi_a <= hi_b
            assert hi_b - lo_b > hi_a - lo_a


def test_each_row_is_predicted_independently_of_its_batch(service: InProcessService) -> None:
    together = _predict(service, {"instances": ROWS})["predictions"]
    for row, expected in zip(ROWS, together, strict=True):
        alone = _predict(service, {"instances": [row]})["predictions"][0]
        assert alone["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)


def _v2_body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "v2-req",
        "inputs": [
            {
                "name": "x1",
                "datatype": "FP32",
                "shape": [len(rows), 1],
                "data": [[r["x1"]] for r in rows],
            },
            {
                "name": "x2",
                "datatype": "FP64",
                "shape": [len(rows)],
                "data": [r["x2"] for r in rows],
            },
            {
                "name": "colour",
                "datatype": "BYTES",
                "shape": [len(rows)],
                "data": [r["colour"] for r in rows],
            },
        ],
        "parameters": {"confidence_level": 0.8},
    }


@pytest.mark.parametrize("path", ["/v2/models/toy/infer", "/v2/models/toy/versions/1/infer"])
def test_v2_infer_json_matches_native(service: InProcessService, path: str) -> None:
    response = service.post(path, json=_v2_body(ROWS))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("toy", "1", "v2-req")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert set(outputs) == {"probabilities", "lower", "upper", "label", "prediction_set"}
    assert outputs["probabilities"]["shape"] == [3, 3]
    assert outputs["label"]["shape"] == [3]
    native = _predict(service, {"instances": ROWS, "confidence_level": 0.8})["predictions"]
    probabilities = outputs["probabilities"]["data"]
    for i, prediction in enumerate(native):
        row = probabilities[i * 3 : i * 3 + 3]
        assert row == pytest.approx(list(prediction["probabilities"].values()), abs=1e-6)
        assert outputs["label"]["data"][i] == prediction["label"]
        mask = outputs["prediction_set"]["data"][i * 3 : i * 3 + 3]
        assert [c for c, inside in zip(TEST_CLASSES, mask, strict=True) if inside] == prediction[
            "prediction_set"
        ]


def test_v2_requested_output_subset(service: InProcessService) -> None:
    body = {**_v2_body(ROWS), "outputs": [{"name": "upper"}]}
    response = service.post("/v2/models/toy/infer", json=body)
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["upper"]


GOOD = {"instances": ROWS[:1]}

BAD_NATIVE: list[tuple[str, Any, dict[str, Any]]] = [
    (
        "missing feature",
        {"instances": [ROWS[0], {"x1": 1.0, "x2": 2.0}]},
        {"instance": 1, "feature": "colour"},
    ),
    (
        "unknown feature",
        {"instances": [{**ROWS[0], "size": 2}]},
        {"instance": 0, "feature": "size"},
    ),
    ("wrong type", {"instances": [{**ROWS[0], "x2": [1, 2]}]}, {"instance": 0, "feature": "x2"}),
    (
        "string in numeric",
        {"instances": [ROWS[0], ROWS[1], {**ROWS[0], "x1": "high"}]},
        {"instance": 2, "feature": "x1"},
    ),
    (
        "boolean in numeric",
        {"instances": [{**ROWS[0], "x1": True}]},
        {"instance": 0, "feature": "x1"},
    ),
    (
        "float in categorical",
        {"instances": [{**ROWS[0], "colour": 2.5}]},
        {"instance": 0, "feature": "colour"},
    ),
    (
        "overflowing number",
        {"instances": [{**ROWS[0], "x2": 1e300}]},
        {"instance": 0, "feature": "x2"},
    ),
    ("empty instances", {"instances": []}, {"field": "instances"}),
    ("too many rows", {"instances": ROWS[:1] * 51}, {"field": "instances", "limit": 50}),
    (
        "level too low",
        {"instances": ROWS[:1], "confidence_level": 0.2},
        {"field": "confidence_level"},
    ),
    (
        "level too high",
        {"instances": ROWS[:1], "confidence_level": 0.9999},
        {"field": "confidence_level"},
    ),
    (
        "level not a number",
        {"instances": ROWS[:1], "confidence_level": "high"},
        {"field": "confidence_level"},
    ),
    ("not an object", [ROWS[0]], {}),
]


@pytest.mark.parametrize(("case", "body", "names"), BAD_NATIVE, ids=[c[0] for c in BAD_NATIVE])
def test_native_bad_input_is_400_naming_the_culprit(
    service: InProcessService, case: str, body: Any, names: dict[str, Any]
) -> None:
    response = service.post("/v1/models/toy/predict", json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "invalid_input"
    assert error["request_id"] == response.headers["x-request-id"]
    for key, value in names.items():
        assert error[key] == value, error
    if "feature" in names:
        assert repr(names["feature"]) in error["error"]
        assert error["expected"]
    if "instance" in names:
        assert f"instance {names['instance']}" in error["error"]
    # The service keeps serving correctly after every bad request.
    _check_prediction(_predict(service, GOOD)["predictions"][0])


def test_nan_literal_is_missing_and_infinity_is_refused(service: InProcessService) -> None:
    # Python's json.dumps writes NaN/Infinity literals; NaN is a missing value, infinity is not
    # a value the model can take.
    nan = b'{"instances": [{"x1": NaN, "x2": 1, "colour": "red"}]}'
    as_null = {"instances": [{"x1": None, "x2": 1, "colour": "red"}]}
    response = service.post("/v1/models/toy/predict", content=nan)
    assert response.status_code == 200, response.text
    expected = _predict(service, as_null)["predictions"][0]["probabilities"]
    assert response.json()["predictions"][0]["probabilities"] == pytest.approx(expected)
    for literal in (b"Infinity", b"-Infinity"):
        body = b'{"instances": [{"x1": 1, "x2": 1, "colour": "red"}, {"x1": 1, "x2": ' + literal
        response = service.post("/v1/models/toy/predict", content=body + b', "colour": "red"}]}')
        assert response.status_code == 400, response.text
        error = response.json()
        assert (error["instance"], error["feature"]) == (1, "x2")
        assert "infinity" in error["error"]
    # A NaN is a missing number, not a category: there it is refused.
    body = b'{"instances": [{"x1": 1, "x2": 1, "colour": NaN}]}'
    response = service.post("/v1/models/toy/predict", content=body)
    assert response.status_code == 400
    assert (response.json()["instance"], response.json()["feature"]) == (0, "colour")
    assert _predict(service, GOOD)["predictions"]


@pytest.mark.parametrize(
    "body",
    [b'{"instances": [', b"", b"instances=1", b'{"instances": [{"x1": 1,}]}'],
    ids=["truncated", "empty", "form", "trailing comma"],
)
def test_malformed_json_is_400(service: InProcessService, body: bytes) -> None:
    for path in ("/v1/models/toy/predict", "/v2/models/toy/infer"):
        response = service.post(path, content=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith("malformed JSON")
    assert _predict(service, GOOD)["predictions"]


@pytest.mark.parametrize(
    ("path", "v2"),
    [
        ("/v1/models/nope/predict", False),
        ("/v1/models/toy/versions/7/predict", False),
        ("/v1/models/toy/versions/latest/predict", False),
        ("/v2/models/nope/infer", True),
        ("/v2/models/toy/versions/2/infer", True),
    ],
)
def test_unknown_model_or_version_is_404(service: InProcessService, path: str, v2: bool) -> None:
    response = service.post(path, json=GOOD)
    assert response.status_code == 404, response.text
    error = response.json()
    if v2:
        assert list(error) == ["error"]  # Triton's error shape
    else:
        assert error["type"] == "model_not_found"


def test_body_over_limit_is_413_from_content_length(service: InProcessService) -> None:
    big = orjson.dumps({"instances": ROWS[:1] * 2000})
    assert len(big) > 64 * 1024
    for path in ("/v1/models/toy/predict", "/v2/models/toy/infer"):
        response = service.post(path, content=big)
        assert response.status_code == 413, response.text
        assert "limit" in response.json()["error"]
    assert _predict(service, GOOD)["predictions"]


def test_body_over_limit_is_413_when_streamed(service: InProcessService) -> None:
    chunk = b" " * 16 * 1024
    sent: list[int] = []

    async def chunks() -> Any:  # no Content-Length: chunked transfer
        for _ in range(64):
            sent.append(len(chunk))
            yield chunk

    response = service.post("/v1/models/toy/predict", content=chunks())
    assert response.status_code == 413
    assert response.json()["type"] == "payload_too_large"
    # Reading stopped at the limit: the rest of the body was never pulled from the client.
    assert sum(sent) < 64 * len(chunk)
    assert _predict(service, GOOD)["predictions"]


BAD_V2: list[tuple[str, Any, str | None]] = [
    ("missing input", lambda b: b["inputs"].pop(2), "colour"),
    ("unknown input", lambda b: b["inputs"].append({**b["inputs"][0], "name": "size"}), "size"),
    ("duplicate input", lambda b: b["inputs"].append(b["inputs"][0]), "x1"),
    ("wrong datatype", lambda b: b["inputs"][2].update(datatype="FP32"), "colour"),
    ("wrong shape", lambda b: b["inputs"][0].update(shape=[3, 2]), "x1"),
    ("length mismatch", lambda b: b["inputs"][1].update(data=[1.0]), "x2"),
    ("string in numeric", lambda b: b["inputs"][1].update(data=[1.0, "a", 2.0]), "x2"),
    ("level out of range", lambda b: b["parameters"].update(confidence_level=0.1), None),
]


@pytest.mark.parametrize(("case", "mutate", "feature"), BAD_V2, ids=[c[0] for c in BAD_V2])
def test_v2_bad_input_is_400_in_triton_shape(
    service: InProcessService, case: str, mutate: Any, feature: str | None
) -> None:
    body = _v2_body(ROWS)
    mutate(body)
    response = service.post("/v2/models/toy/infer", json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert list(error) == ["error"]
    if feature is not None:
        assert repr(feature) in error["error"]
    assert service.post("/v2/models/toy/infer", json=_v2_body(ROWS)).status_code == 200


def test_wrong_method_on_a_hot_path_is_405_json(service: InProcessService) -> None:
    response = service.get("/v1/models/toy/predict")
    assert response.status_code == 405
    assert response.json()["type"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"


def test_unexpected_error_is_500_with_request_id_and_service_survives(
    service: InProcessService, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = service.app.server.pipeline

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated bug in the runtime")

    monkeypatch.setattr(pipeline, "predict", broken)
    response = service.post("/v1/models/toy/predict", json=GOOD, headers={"x-request-id": "boom"})
    v2 = service.post("/v2/models/toy/infer", json=_v2_body(ROWS))
    monkeypatch.undo()
    assert response.status_code == 500
    body = response.json()
    assert body["request_id"] == "boom"
    assert "boom" in body["error"]
    assert "simulated" not in response.text and "Traceback" not in response.text
    assert v2.status_code == 500
    assert list(v2.json()) == ["error"]
    assert any("simulated bug" in str(r.exc_info) for r in caplog.records if r.exc_info)
    _check_prediction(_predict(service, GOOD)["predictions"][0])
