"""The bundle contract: manifest validation, atomic publishing, the graph's preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.bundle import (
    MODEL_FILE,
    CategoricalFeature,
    Feature,
    ManifestError,
    NumericFeature,
    RepositoryError,
    check_repository,
    graph_columns,
    model_versions,
    read_manifest,
    staged_bundle,
)
from service.bundle.manifest import SCHEMA_VERSION
from service.http.app import create_app
from service.settings import Settings
from tests.service.conftest import (
    HTTP_TEST_SETTINGS,
    TEST_CLASSES,
    InProcessService,
    write_test_bundle,
)
from training.onnx_graph import EnsembleWeights, build_ensemble_graph


def _identity_weights(width: int, members: int = 2) -> EnsembleWeights:
    # One layer whose logits equal the encoded features: the output exposes the encoding.
    w = np.repeat(np.eye(width, dtype=np.float32)[None], members, axis=0)
    b = np.zeros((members, width), dtype=np.float32)
    return EnsembleWeights(layers=[(w, b)], temperatures=np.ones(members, dtype=np.float32))


def test_graph_imputes_standardises_and_one_hot_encodes_with_unknown_bucket() -> None:
    features: list[Feature] = [
        NumericFeature(name="age", mean=40.0, std=10.0),
        CategoricalFeature(name="city", categories=["paris", "rome"]),
    ]
    model = build_ensemble_graph(features, _identity_weights(1 + 3))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    cols = graph_columns(features, {"age": [50.0, None, 40.0], "city": ["rome", None, "oslo"]})
    probs = session.run(None, cols)[0]  # [N, K, C] softmax of the encoding
    logits = np.log(probs[:, 0, :])
    logits -= logits[:, :1]  # softmax is shift-invariant: compare differences to column 0
    # age 50 -> z=1; rome -> column 2; missing age -> mean -> z=0; unseen/missing -> unknown.
    expected = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]], dtype=np.float64)
    expected -= expected[:, :1]
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def _fail_while_staging(repo: Path, name: str) -> None:
    with staged_bundle(repo, name) as staged:
        (staged.path / MODEL_FILE).write_bytes(b"half")
        raise RuntimeError("boom")


def test_staged_bundle_publishes_next_version_and_cleans_up_on_failure(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    with staged_bundle(repo, "m") as staged:
        (staged.path / MODEL_FILE).write_bytes(b"x")
    assert staged.published == repo / "m" / "1"
    with pytest.raises(RuntimeError, match="boom"):
        _fail_while_staging(repo, "m")
    assert model_versions(repo, "m") == [1]
    assert sorted(p.name for p in (repo / "m").iterdir()) == ["1"]
    with pytest.raises(RuntimeError, match="boom"):
        _fail_while_staging(repo, "fresh")
    assert not (repo / "fresh").exists()


def test_repository_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "models"
    f.write_text("not a directory")
    with pytest.raises(RepositoryError, match="is a file"):
        check_repository(f, create=True)


def test_manifest_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1, "name": "m"}))
    with pytest.raises(ManifestError, match="features"):
        read_manifest(tmp_path)


def _as_schema_1(bundle: Path) -> None:
    # What the schema-1 trainer wrote: no temperature objective, reference outputs on training
    # rows (no set-size or split column); model.onnx and its sha256 are untouched.
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION == 2
    raw["schema_version"] = 1
    del raw["calibration"]["temperature_objective"]
    path.write_text(json.dumps(raw))


def test_a_schema_1_bundle_still_loads_and_serves(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    bundle = write_test_bundle(repository, "toy")
    assert read_manifest(bundle).reference_outputs_held_out
    _as_schema_1(bundle)
    manifest = read_manifest(bundle)
    assert manifest.schema_version == 1
    assert not manifest.reference_outputs_held_out  # the drift job warns on this
    assert manifest.calibration.temperature_objective == "member"
    service = InProcessService(
        create_app(Settings(model_repository=repository, **HTTP_TEST_SETTINGS))
    ).start()
    try:
        response = service.post(
            "/v1/models/toy/predict",
            json={"instances": [{"x1": 0.3, "x2": 4.0, "colour": "red"}]},
        )
    finally:
        service.close()
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert list(prediction["probabilities"]) == TEST_CLASSES


def test_an_unknown_schema_version_is_refused_by_name(tmp_path: Path) -> None:
    bundle = write_test_bundle(tmp_path / "models", "toy")
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["schema_version"] = 3
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="schema_version"):
        read_manifest(bundle)


def test_feature_name_lists_follow_graph_order_and_are_built_once(tmp_path: Path) -> None:
    manifest = read_manifest(write_test_bundle(tmp_path / "models", "toy"))
    # The test bundle's features, in graph order: x1, x2 numeric, colour categorical.
    assert manifest.feature_names == ["x1", "x2", "colour"]
    assert manifest.numeric_feature_names == ["x1", "x2"]
    # Read on every request: computed once per manifest, not per read.
    assert manifest.feature_names is manifest.feature_names
    assert manifest.numeric_feature_names is manifest.numeric_feature_names
    assert "numeric_feature_names" not in manifest.model_dump()  # not part of the contract
    # A copy with other features answers for its own features, not the cached ones.
    renamed = manifest.model_copy(
        update={
            "features": [f.model_copy(update={"name": f"f_{f.name}"}) for f in manifest.features]
        }
    )
    assert renamed.feature_names == ["f_x1", "f_x2", "f_colour"]
    assert renamed.numeric_feature_names == ["f_x1", "f_x2"]
    assert renamed.categorical_feature_names == ["f_colour"]
    assert list(renamed.features_by_name) == ["f_x1", "f_x2", "f_colour"]
    assert manifest.feature_names == ["x1", "x2", "colour"]
