"""Per-instance context attributes: decoded by both REST codecs, logged, never fed to the model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from service.bundle import Manifest, SensitiveColumn, read_manifest
from service.codecs.context import MAX_CONTEXT_CHARS
from service.codecs.records import decode_predict_request
from service.codecs.v2 import decode_infer_request
from service.errors import InvalidInput
from service.predlog.batches import columns_of, prediction_batch
from service.predlog.reader import read_window
from tests.service.conftest import ServiceFactory, write_test_bundle


def wait_for_window(url: str, model: str, rows: int, timeout_s: float = 15.0) -> pd.DataFrame:
    """The model's logged rows once ``rows`` are readable (segments seal on a short timer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            frame = read_window(url, model)
        except ValueError:  # nothing sealed yet
            frame = pd.DataFrame()
        if len(frame) >= rows or time.monotonic() > deadline:
            return frame
        time.sleep(0.1)


ROW = {"x1": 1.5, "x2": 3, "colour": "red"}
GROUP = SensitiveColumn(name="group", source="context", groups=["a", "b"])


@pytest.fixture
def plain(bundle_repository: Path) -> Manifest:
    return read_manifest(bundle_repository / "toy" / "1")


@pytest.fixture
def sliced(plain: Manifest) -> Manifest:
    """The toy model, declaring one context attribute ``group`` (as --exclude would)."""
    return plain.model_copy(update={"sensitive": [GROUP]})


def native(manifest: Manifest, instances: list[dict[str, Any]]) -> Any:
    payload = {"instances": instances}
    return decode_predict_request(payload, manifest, max_rows=10, default_level=0.9)


def v2(manifest: Manifest, rows: int, parameters: dict[str, Any] | None = None) -> Any:
    inputs = [
        {"name": "x1", "datatype": "FP32", "shape": [rows, 1], "data": [0.5] * rows},
        {"name": "x2", "datatype": "FP32", "shape": [rows, 1], "data": [1.0] * rows},
        {"name": "colour", "datatype": "BYTES", "shape": [rows, 1], "data": ["red"] * rows},
    ]
    body: dict[str, Any] = {"inputs": inputs}
    if parameters is not None:
        body["parameters"] = parameters
    return decode_infer_request(orjson.dumps(body), None, manifest, max_rows=10, default_level=0.9)


def test_native_context_becomes_text_columns_and_leaves_the_features(sliced: Manifest) -> None:
    request = native(
        sliced,
        [
            {**ROW, "context": {"group": "b"}},
            dict(ROW),  # no context: not given
            {**ROW, "context": {"group": 7}},  # numbers and booleans become their text
            {**ROW, "context": {"group": True}},
            {**ROW, "context": {"group": None}},
        ],
    )
    assert request.context["group"].tolist() == ["b", "", "7", "true", ""]
    assert list(request.batch.columns) == ["x1", "x2", "colour"]  # never a model input


def test_v2_context_is_a_json_text_parameter_with_one_value_per_instance(sliced: Manifest) -> None:
    request = v2(sliced, 3, {"context": '{"group": ["a", null, 2.5]}'})
    assert request.context["group"].tolist() == ["a", "", "2.5"]
    absent = v2(sliced, 2)
    assert absent.context["group"].tolist() == ["", ""]


def test_a_model_without_context_attributes_carries_none(plain: Manifest) -> None:
    assert native(plain, [ROW]).context is None
    assert v2(plain, 1).context is None


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"group": {"nested": 1}}, "instance 1: context 'group' must be a string"),
        ({"group": ["a"]}, "instance 1: context 'group' must be a string"),
        ({"group": "x" * (MAX_CONTEXT_CHARS + 1)}, "over the limit of 256"),
        ({"sex": "f"}, "instance 1: unknown context attribute 'sex'"),
        ("b", "instance 1: 'context' must be an object"),
    ],
)
def test_hostile_native_context_is_refused_naming_the_instance(
    sliced: Manifest, context: Any, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        native(sliced, [dict(ROW), {**ROW, "context": context}])
    assert caught.value.details["instance"] == 1


def test_context_sent_to_a_model_that_declares_none_is_refused(plain: Manifest) -> None:
    with pytest.raises(InvalidInput, match="declares no context attributes"):
        native(plain, [{**ROW, "context": {"group": "a"}}])
    with pytest.raises(InvalidInput, match="this model declares none"):
        v2(plain, 1, {"context": '{"group": ["a"]}'})


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        ('{"group": ["a"]}', r"must be a list of 2 values \(one per instance\)"),
        ('{"group": "a"}', "must be a list of 2 values"),
        ('["a", "b"]', "must hold a JSON object"),
        ('{"group": [[1], "a"]}', "context 'group' must be a string"),
        ("{nope", "malformed JSON"),
        ('{"other": ["a", "b"]}', "unknown context attribute 'other'"),
    ],
)
def test_hostile_v2_context_is_refused(sliced: Manifest, parameter: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        v2(sliced, 2, {"context": parameter})


def test_a_v2_context_that_is_not_a_text_is_refused(sliced: Manifest) -> None:
    with pytest.raises(InvalidInput, match="parameter is a boolean, a number or a string"):
        v2(sliced, 1, {"context": {"group": ["a"]}})  # type: ignore[dict-item]


def test_the_log_batch_carries_context_after_the_class_columns(sliced: Manifest) -> None:
    from service.predlog import PredictionRecord

    record = PredictionRecord(
        logged_at=1.0,
        request_id="r",
        model="toy",
        version=1,
        protocol="v1",
        classes=["a", "b"],
        features={"x": np.array([[0.5], [1.0]], dtype=np.float32)},
        probabilities=np.array([[0.75, 0.25], [0.5, 0.5]]),
        lower=np.array([[0.5, 0.125], [0.25, 0.25]]),
        upper=np.array([[0.875, 0.5], [0.75, 0.75]]),
        prediction_sets=np.array([[True, False], [True, True]]),
        labels=["a", "a"],
        confidence_level=0.9,
        latency_s=0.01,
        context={"group": np.array(["b", ""], dtype=object)},
    )
    batch = prediction_batch([record], columns_of(record))
    assert batch.schema.names[-1] == "context.group"
    assert batch.to_pydict()["context.group"] == ["b", None]  # "" is not given: null


def test_context_reaches_the_log_and_the_drift_window_through_http(
    tmp_path: Path, service_factory: ServiceFactory
) -> None:
    repository = tmp_path / "models"
    bundle = write_test_bundle(repository, "toy")
    manifest = read_manifest(bundle)
    # The bundle declares the context attribute, as `probserve train --exclude group` writes it.
    (bundle / "manifest.json").write_text(
        manifest.model_copy(update={"sensitive": [GROUP]}).model_dump_json()
    )
    url = str(tmp_path / "predictions")
    service = service_factory(
        repository,
        prediction_log_url=url,
        prediction_log_spool_dir=tmp_path / "spool",
        prediction_log_segment_seconds=0.1,
    )
    instances = [{**ROW, "context": {"group": "a"}}, {**ROW, "context": {"group": "b"}}]
    native_answer = service.post("/v1/models/toy/predict", json={"instances": instances})
    assert native_answer.status_code == 200, native_answer.text
    plain = service.post("/v1/models/toy/predict", json={"instances": [ROW]})
    assert plain.status_code == 200
    # The context changes nothing the model computes (float32 rounding differs by batch size).
    first = native_answer.json()["predictions"][0]["probabilities"]
    assert first == pytest.approx(plain.json()["predictions"][0]["probabilities"], rel=1e-6)
    frame = wait_for_window(url, "toy", 3)
    assert sorted(frame["context.group"].fillna("").tolist()) == ["", "a", "b"]
    assert "group" not in frame.columns
