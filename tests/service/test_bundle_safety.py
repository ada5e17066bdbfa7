"""A bundle cannot read files outside itself.

External-data tensors: ONNX Runtime builds the session from bytes and resolves an external
location against the server's working directory, so a crafted bundle could read (and leak through
its outputs) any file there. Symlinks: a model or version directory may not lead outside the
repository. Both are refused with a reason; the other models keep serving.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data

from service.bundle import MANIFEST_FILE, MODEL_FILE, model_names, model_versions
from service.errors import ModelLoadError
from service.runtime import load_model
from service.runtime.external_data import CHILDREN, TENSOR, MalformedModel, external_tensors
from tests.service.conftest import ServiceFactory, write_test_bundle

# -- external data -------------------------------------------------------------------------------


def _externalise(bundle: Path, cwd: Path) -> None:
    """Move every initializer of ``bundle``'s graph into ``cwd/weights.bin`` (same bytes, so
    the outputs do not change) and fix the manifest's sha256, as an attacker would."""
    model = onnx.load(bundle / MODEL_FILE)
    # The weight matrices go out; small tensors (Squeeze axes) stay inline, as shape inference
    # in onnxruntime needs them. Without the check, such a bundle loads and serves.
    convert_model_to_external_data(model, location="weights.bin", size_threshold=256)
    # onnx.save writes the data next to the model; the server would read it from its cwd.
    onnx.save_model(model, bundle / MODEL_FILE)
    (bundle / "weights.bin").rename(cwd / "weights.bin")
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["model_sha256"] = hashlib.sha256((bundle / MODEL_FILE).read_bytes()).hexdigest()
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_bundle_with_external_data_is_refused_without_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = write_test_bundle(tmp_path / "models", "toy")
    cwd = tmp_path / "server-cwd"
    cwd.mkdir()
    _externalise(bundle, cwd)
    monkeypatch.chdir(cwd)  # where the crafted location resolves when the session loads bytes
    with pytest.raises(ModelLoadError) as info:
        load_model(bundle)
    error = info.value
    assert error.details["check"] == "external-data"
    assert "external data" in error.message
    assert "weights.bin" not in error.message
    assert str(cwd) not in error.message


def test_bundle_without_external_data_still_loads(tmp_path: Path) -> None:
    bundle = write_test_bundle(tmp_path / "models", "toy")
    assert external_tensors((bundle / MODEL_FILE).read_bytes()) == []
    assert load_model(bundle).manifest.name == "toy"


def _external(name: str) -> TensorProto:
    tensor = numpy_helper.from_array(np.ones(2, dtype="float32"), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "/etc/hostname"
    return tensor


def test_external_tensors_are_found_in_subgraphs_attributes_and_functions() -> None:
    # Not loadable models, only where a tensor can sit: an If branch's initializer, a Constant
    # node's value attribute, a sparse initializer, and a node inside a model-local function.
    then_graph = helper.make_graph([], "then", [], [], initializer=[_external("in_branch")])
    if_node = helper.make_node(
        "If", ["c"], ["y"], then_branch=then_graph, else_branch=helper.make_graph([], "e", [], [])
    )
    constant = helper.make_node("Constant", [], ["k"], value=_external("in_attribute"))
    sparse = helper.make_sparse_tensor(
        _external("sparse_values"), numpy_helper.from_array(np.array([0, 1])), [4]
    )
    graph = helper.make_graph(
        [if_node, constant],
        "g",
        [],
        [],
        initializer=[numpy_helper.from_array(np.zeros(3, dtype="float32"), "ok")],
        sparse_initializer=[sparse],
    )
    function = helper.make_function(
        "local",
        "f",
        [],
        ["z"],
        [helper.make_node("Constant", [], ["z"], value=_external("in_function"))],
        [helper.make_opsetid("", 17)],
    )
    model = helper.make_model(graph, functions=[function])
    found = external_tensors(model.SerializeToString())
    assert sorted(found) == ["in_attribute", "in_branch", "in_function", "sparse_values"]


def test_the_walk_uses_onnx_field_numbers() -> None:
    # The hand-written table against the onnx package's own descriptors.
    for kind, children in CHILDREN.items():
        descriptor = getattr(onnx, kind).DESCRIPTOR
        for number, child in children.items():
            field = descriptor.fields_by_number[number]
            assert field.message_type.name == child, (kind, number)
    tensor = TensorProto.DESCRIPTOR.fields_by_name
    assert tensor["external_data"].number == 13
    assert tensor["data_location"].number == 14
    assert tensor["name"].number == 8
    assert TensorProto.EXTERNAL == 1
    assert TENSOR in CHILDREN


@pytest.mark.parametrize("data", [b"\x3a\xff", b"\x3a\x05ab", b"\x3b", b"\xff" * 12])
def test_malformed_model_bytes_are_an_error_not_a_crash(data: bytes) -> None:
    with pytest.raises(MalformedModel):
        external_tensors(data)


# -- symlinks leading outside the repository -----------------------------------------------------


def test_symlinked_model_and_version_directories_outside_the_repository_are_ignored(
    tmp_path: Path, service_factory: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    repository = tmp_path / "models"
    write_test_bundle(repository, "toy")  # toy/1, a real directory
    outside = tmp_path / "elsewhere"
    write_test_bundle(outside, "evil")  # a valid bundle, but outside the repository
    write_test_bundle(outside, "toy", seed=5)  # outside/toy/1
    (repository / "evil").symlink_to(outside / "evil", target_is_directory=True)
    (repository / "toy" / "2").symlink_to(outside / "toy" / "1", target_is_directory=True)
    (repository / "toy" / "3").symlink_to(repository / "toy" / "1", target_is_directory=True)
    (repository / "toy" / "4").symlink_to(tmp_path / "missing", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="service.bundle.repository"):
        assert model_names(repository) == ["toy"]
        # A symlink that stays inside (an alias of version 1) is fine.
        assert model_versions(repository, "toy") == [1, 3]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "evil" in warned
    assert "leads outside the model repository" in warned

    service = service_factory(repository)
    assert service.get("/v1/models/toy").status_code == 200
    assert service.get("/v1/models/evil").status_code == 404
    assert service.get("/v1/models/toy/versions/2").status_code == 404
    served = service.post(
        "/v1/models/toy/predict", json={"instances": [{"x1": 1, "x2": 2, "colour": "red"}]}
    )
    assert served.status_code == 200, served.text
    assert served.json()["version"] == 3  # the newest version inside the repository


def test_symlinked_repository_root_is_fine(tmp_path: Path) -> None:
    # The repository path itself may be a symlink (a mounted volume); entries inside it count.
    real = tmp_path / "real"
    write_test_bundle(real, "toy")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert model_names(link) == ["toy"]
    assert model_versions(link, "toy") == [1]
