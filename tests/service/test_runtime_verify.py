"""Bundle loading refuses every kind of bad bundle with a reason naming the bundle and the check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import EPFail

from service.bundle import (
    MANIFEST_FILE,
    MODEL_FILE,
    Feature,
    NumericFeature,
    read_manifest,
    write_manifest,
)
from service.bundle.columns import graph_columns
from service.bundle.manifest import file_sha256
from service.errors import ModelLoadError
from service.runtime import load_model
from tests.service.conftest import TEST_FEATURES, BundleFactory, make_weights
from training.onnx_graph import EnsembleWeights, build_ensemble_graph


def _replace_graph(bundle: Path, features: list[Feature], weights: EnsembleWeights) -> None:
    """Swap model.onnx for another graph and fix the manifest's sha256: later checks must see it."""
    (bundle / MODEL_FILE).write_bytes(build_ensemble_graph(features, weights).SerializeToString())
    manifest = read_manifest(bundle)
    write_manifest(
        bundle, manifest.model_copy(update={"model_sha256": file_sha256(bundle / MODEL_FILE)})
    )


def _refusal(bundle: Path) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as info:
        load_model(bundle)
    error = info.value
    assert str(bundle) in error.message
    assert error.details["bundle"] == str(bundle)
    return error


def test_a_good_bundle_loads_and_reproduces_its_sample(bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory("toy")
    model = load_model(bundle)
    assert (model.name, model.version, model.provider) == ("toy", 1, "CPUExecutionProvider")
    columns = graph_columns(model.manifest.features, model.manifest.sample.inputs)
    out = model.run(columns)
    np.testing.assert_allclose(out, np.asarray(model.manifest.sample.outputs), atol=1e-5)


def test_bad_manifest_json_is_refused_by_the_manifest_check(bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory("toy")
    (bundle / MANIFEST_FILE).write_text('{"name": "toy", ')
    error = _refusal(bundle)
    assert error.details["check"] == "manifest"
    assert "manifest check" in error.message


def test_manifest_missing_a_field_is_refused(bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory("toy")
    text = (bundle / MANIFEST_FILE).read_text().replace('"model_sha256"', '"model_sha"')
    (bundle / MANIFEST_FILE).write_text(text)
    assert _refusal(bundle).details["check"] == "manifest"


def test_manifest_naming_another_model_is_refused(bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory("toy")
    manifest = read_manifest(bundle)
    write_manifest(bundle, manifest.model_copy(update={"name": "other"}))
    error = _refusal(bundle)
    assert error.details["check"] == "manifest"
    assert "'other'" in error.message


def test_tampered_model_is_refused_by_the_sha256_check(bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory("toy")
    data = bytearray((bundle / MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF
    (bundle / MODEL_FILE).write_bytes(bytes(data))
    error = _refusal(bundle)
    assert error.details["check"] == "sha256"
    assert read_manifest(bundle).model_sha256 in error.message


def test_missing_model_file_is_refused(bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory("toy")
    (bundle / MODEL_FILE).unlink()
    assert _refusal(bundle).details["check"] == "sha256"


def test_graph_with_other_input_names_is_refused(bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory("toy")
    renamed = [NumericFeature(name="x_one", mean=0.0, std=1.0), *TEST_FEATURES[1:]]
    _replace_graph(bundle, renamed, make_weights(0))
    error = _refusal(bundle)
    assert error.details["check"] == "inputs"
    assert "x_one" in error.message and "x1" in error.message


def test_graph_with_a_numeric_input_where_the_manifest_has_a_category_is_refused(
    bundle_factory: BundleFactory,
) -> None:
    bundle = bundle_factory("toy")
    # colour as a numeric input: 3 encoded columns instead of 4, so different first-layer weights.
    features = [*TEST_FEATURES[:2], NumericFeature(name="colour", mean=0.0, std=1.0)]
    rng = np.random.default_rng(1)
    weights = make_weights(0)
    w0 = rng.normal(size=(4, 3, 8)).astype(np.float32)
    _replace_graph(
        bundle,
        features,
        EnsembleWeights([(w0, weights.layers[0][1]), weights.layers[1]], weights.temperatures),
    )
    error = _refusal(bundle)
    assert error.details["check"] == "inputs"
    assert "tensor(float)" in error.message and "tensor(string)" in error.message


def test_graph_with_other_member_count_is_refused_by_the_output_check(
    bundle_factory: BundleFactory,
) -> None:
    bundle = bundle_factory("toy", members=4)
    _replace_graph(bundle, TEST_FEATURES, make_weights(0, members=5))
    error = _refusal(bundle)
    assert error.details["check"] == "output"
    assert "4 members" in error.message and "5" in error.message


def test_graph_with_other_class_count_is_refused_by_the_output_check(
    bundle_factory: BundleFactory,
) -> None:
    bundle = bundle_factory("toy")
    _replace_graph(bundle, TEST_FEATURES, make_weights(0, classes=2))
    error = _refusal(bundle)
    assert error.details["check"] == "output"
    assert "3 classes" in error.message


def test_graph_that_does_not_reproduce_the_sample_is_refused(bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory("toy", seed=0)
    _replace_graph(bundle, TEST_FEATURES, make_weights(7))  # same shapes, other weights
    error = _refusal(bundle)
    assert error.details["check"] == "sample"
    assert "tolerance" in error.message


def test_sample_within_tolerance_passes_and_beyond_it_fails(bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory("toy")
    manifest = read_manifest(bundle)
    outputs = np.asarray(manifest.sample.outputs)
    for shift, passes in ((5e-5, True), (5e-4, False)):
        sample = manifest.sample.model_copy(update={"outputs": (outputs + shift).tolist()})
        write_manifest(bundle, manifest.model_copy(update={"sample": sample}))
        if passes:
            load_model(bundle)
        else:
            assert _refusal(bundle).details["check"] == "sample"


def test_garbage_onnx_with_matching_sha_is_refused_by_the_onnx_check(
    bundle_factory: BundleFactory,
) -> None:
    bundle = bundle_factory("toy")
    (bundle / MODEL_FILE).write_bytes(b"not an onnx graph")
    manifest = read_manifest(bundle)
    write_manifest(
        bundle, manifest.model_copy(update={"model_sha256": file_sha256(bundle / MODEL_FILE)})
    )
    assert _refusal(bundle).details["check"] == "onnx"


def test_run_answers_as_inference_session_run_and_falls_back_on_a_provider_failure(
    bundle_factory: BundleFactory,
) -> None:
    model = load_model(bundle_factory())
    columns = graph_columns(model.manifest.features, model.manifest.sample.inputs)
    expected = model.session.run(model.output_names, columns)[0]
    assert np.array_equal(model.run(columns), expected)  # the binding, called directly

    class FailingBinding:
        """The session's binding, whose run fails as a broken execution provider does."""

        def __init__(self, real: object) -> None:
            self.real = real

        def run(self, *args: object) -> object:
            raise EPFail("injected: the execution provider failed")

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

    real = model.session._sess
    model.session._sess = FailingBinding(real)
    calls: list[object] = []
    original = model.session.run

    def session_run(*args: object, **kwargs: object) -> object:
        calls.append(args)
        model.session._sess = real  # what InferenceSession's provider fallback rebuilds
        return original(*args, **kwargs)

    model.session.run = session_run  # type: ignore[method-assign]
    assert np.array_equal(model.run(columns), expected)
    assert len(calls) == 1  # the provider failure went through InferenceSession.run
