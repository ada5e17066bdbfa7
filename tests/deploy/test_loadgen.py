"""docker/loadgen.py: the compose stack's demo traffic (noise, one shifted feature, feedback)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.helpers import ROOT


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("loadgen", ROOT / "docker" / "loadgen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


loadgen = load()


def test_instance_without_noise_is_the_example_plus_the_shift() -> None:
    example = {"x1": 0.5, "x2": None, "colour": "red"}
    scales = {"x1": 2.0, "x2": 3.0}
    rng = random.Random(0)
    unshifted = loadgen.make_instance(example, scales, rng, noise=0.0, shift={})
    assert unshifted == example
    # One std of x1 is 2.0: a 1-std shift moves 0.5 to 2.5; a missing x2 stays missing.
    shifted = loadgen.make_instance(example, scales, rng, noise=0.0, shift={"x1": 2.0})
    assert shifted == {"x1": 2.5, "x2": None, "colour": "red"}


def test_noise_is_scaled_by_the_feature_std() -> None:
    rng = random.Random(1)
    values = [
        loadgen.make_instance({"x": 10.0}, {"x": 4.0}, rng, noise=0.5, shift={})["x"]
        for _ in range(4000)
    ]
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    # noise sd = 0.5 * 4.0 = 2.0; with 4000 draws the sample sd is within ~5% of it.
    assert abs(mean - 10.0) < 0.15
    assert 1.9 < sd < 2.1


def test_labels_follow_the_probabilities_and_flip_to_another_class() -> None:
    rng = random.Random(2)
    classes = ["a", "b", "c"]
    assert {loadgen.draw_label({"a": 1.0, "b": 0.0}, classes, rng, 0.0) for _ in range(50)} == {"a"}
    flipped = {loadgen.draw_label({"a": 1.0, "b": 0.0}, classes, rng, 1.0) for _ in range(200)}
    assert flipped == {"b", "c"}


def test_scales_without_a_manifest_use_the_value_magnitude() -> None:
    view = loadgen.ModelView("m", 1, {"x": -3.0, "y": 0.0, "z": None}, ["x", "y", "z"], ["a"])
    assert loadgen.feature_scales(view, None) == {"x": 3.0, "y": 1.0, "z": 1.0}


@pytest.mark.slow
def test_against_a_real_server_predictions_and_feedback_are_accepted(tmp_path: Path) -> None:
    from tests.service.conftest import start_live_server, write_test_bundle

    repository = tmp_path / "models"
    write_test_bundle(repository, "toy")
    server = start_live_server(repository, tmp_path / "server.log")
    try:
        args = loadgen.parse_args(
            [
                f"--url={server.url}",
                "--model=toy",
                f"--model-repository={repository}",
                "--rate=0",
                "--requests=40",
                "--batch=2",
                "--shift-after-s=0",
                "--shift-feature=x2",
                "--feedback-share=1",
                "--feedback-delay-s=2",
                "--wait-s=10",
            ]
        )
        model = loadgen.read_model(loadgen.Client(server.url), "toy")
        # The manifest's std of x2 is 2.0 (tests/service/conftest.py): that is the shift.
        assert loadgen.feature_scales(model, repository)["x2"] == 2.0
        stats = loadgen.run(args)
    finally:
        server.stop()
    assert (stats.requests, stats.errors, stats.shifted_requests) == (40, 0, 40)
    assert stats.labels_posted == 80  # every instance of every request, labelled once
    assert stats.labels_invalid == 0
    assert stats.labels_accepted + stats.labels_unknown == 80
    # Labels are posted 2 s after their predictions; the log writer has stored most by then.
    assert stats.labels_accepted > 0
