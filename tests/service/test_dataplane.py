"""The data plane end to end below HTTP: real bundles, real sessions, the uncertainty contract."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from service.bundle import read_manifest
from service.bundle.columns import graph_columns
from service.dataplane import DataPlane
from service.errors import InvalidInput, ModelNotFound, ModelNotReady
from service.telemetry import PredictionServed, Telemetry
from service.types import FeatureBatch, ModelHandle, PredictionResult
from service.uncertainty import ensemble_mean
from tests.service.conftest import TEST_CLASSES, BundleFactory, make_registry
from tests.service.test_batching import rows
from tests.service.test_registry import corrupt

T = TypeVar("T")

LEVELS = [0.5, 0.8, 0.9, 0.95, 0.99, 0.999]


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run one async scenario in a fresh event loop."""
    return asyncio.run(scenario())  # type: ignore[arg-type]


class Recorder(Telemetry):
    """Telemetry that keeps every prediction it was told of."""

    def __init__(self) -> None:
        self.calls: list[PredictionServed] = []

    def prediction_served(self, served: PredictionServed) -> None:
        self.calls.append(served)


class Broken(Telemetry):
    """Telemetry that always fails: the prediction must still be answered."""

    def prediction_served(self, served: PredictionServed) -> None:
        raise RuntimeError("metrics backend down")


def with_plane(
    repository: Path,
    body: Callable[[DataPlane], Awaitable[T]],
    telemetry: Telemetry | None = None,
    **registry_args: Any,
) -> T:
    """Start a DataPlane over ``repository``, run ``body``, stop it."""

    async def scenario() -> T:
        plane = DataPlane(make_registry(repository, **registry_args), telemetry)
        await plane.start()
        try:
            return await body(plane)
        finally:
            await plane.stop()

    return run(scenario)


@pytest.mark.parametrize("delay_us", [0, 2_000])
def test_predictions_keep_the_uncertainty_contract(bundle_repository: Path, delay_us: int) -> None:
    batch = rows(200, seed=3)

    async def body(plane: DataPlane) -> list[PredictionResult]:
        handle = plane.resolve("toy")
        return [await plane.infer(handle, batch, level) for level in LEVELS]

    results = with_plane(bundle_repository, body, max_queue_delay_us=delay_us)
    previous_sets = None
    previous_width = None
    for level, result in zip(LEVELS, results, strict=True):
        p, lo, hi, sets = result.probabilities, result.lower, result.upper, result.prediction_sets
        assert result.confidence_level == level
        assert p.shape == lo.shape == hi.shape == sets.shape == (200, 3)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert np.all((lo <= p) & (p <= hi))
        # (0, 1) in exact arithmetic; a saturated float64 sigmoid may reach 1.0 for wild spreads.
        assert np.all((lo >= 0) & (hi <= 1))
        label_index = np.array([TEST_CLASSES.index(label) for label in result.labels])
        np.testing.assert_array_equal(label_index, p.argmax(axis=1))
        assert np.all(sets[np.arange(200), label_index]), "the set contains the label"
        width = hi - lo
        if previous_sets is not None and previous_width is not None:
            assert np.all(sets >= previous_sets), "sets grow (weakly) with the level"
            assert np.all(width >= previous_width - 1e-12), "intervals widen with the level"
        previous_sets, previous_width = sets, width
        assert result.timings["inference"] > 0 and result.timings["queue_wait"] >= 0
    assert results[0].prediction_sets.sum() < results[-1].prediction_sets.sum()


def test_probabilities_are_the_mean_of_the_stored_sample_outputs(bundle_repository: Path) -> None:
    manifest = read_manifest(bundle_repository / "toy" / "1")
    columns = graph_columns(manifest.features, manifest.sample.inputs)
    rows_ = len(manifest.sample.outputs)

    async def body(plane: DataPlane) -> PredictionResult:
        return await plane.infer(plane.resolve("toy"), FeatureBatch(columns, rows_), 0.9)

    result = with_plane(bundle_repository, body)
    expected = ensemble_mean(np.asarray(manifest.sample.outputs))
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    assert result.handle.version == 1


def test_telemetry_sees_every_success_with_request_id_and_protocol(
    bundle_repository: Path,
) -> None:
    recorder = Recorder()

    async def body(plane: DataPlane) -> PredictionResult:
        handle = plane.resolve("toy")
        with pytest.raises(InvalidInput, match="confidence_level"):
            await plane.infer(handle, rows(1, 0), 0.4)
        return await plane.infer(handle, rows(2, 1), 0.9, request_id="r-1", protocol="v1")

    result = with_plane(bundle_repository, body, recorder)
    assert len(recorder.calls) == 1, "a refused request is not reported"
    served = recorder.calls[0]
    assert (served.batch.rows, served.request_id, served.protocol) == (2, "r-1", "v1")
    assert served.result is result
    assert served.latency_s > 0


def test_broken_telemetry_does_not_fail_a_prediction(bundle_repository: Path) -> None:
    async def body(plane: DataPlane) -> PredictionResult:
        return await plane.infer(plane.resolve("toy"), rows(2, 1), 0.9)

    result = with_plane(bundle_repository, body, Broken())
    assert result.probabilities.shape == (2, 3)


@pytest.mark.parametrize("level", [0.0, 0.49, 0.9991, 1.0, float("nan")])
def test_confidence_level_outside_the_range_is_invalid_input(
    bundle_repository: Path, level: float
) -> None:
    async def body(plane: DataPlane) -> None:
        with pytest.raises(InvalidInput):
            await plane.infer(plane.resolve("toy"), rows(1, 0), level)

    with_plane(bundle_repository, body)


def test_metadata_for_the_http_layer(bundle_factory: BundleFactory) -> None:
    repository = bundle_factory("toy").parent.parent
    corrupt(bundle_factory("broken"))

    async def body(plane: DataPlane) -> None:
        info = plane.model_info("toy")
        assert (info.name, info.version, info.versions, info.state) == ("toy", 1, [1], "READY")
        assert info.provider == "CPUExecutionProvider"
        assert info.classes == TEST_CLASSES and info.members == 4 and info.target == "answer"
        assert [(f.name, f.kind, f.datatype) for f in info.features] == [
            ("x1", "numeric", "FP32"),
            ("x2", "numeric", "FP32"),
            ("colour", "categorical", "BYTES"),
        ]
        assert info.features[2].categories == ["blue", "green", "red"]
        assert info.metrics == {"accuracy": 0.5}
        summaries = {s.name: s for s in plane.list_models()}
        assert summaries["toy"].state == "READY" and summaries["toy"].default_version == 1
        assert summaries["broken"].state == "UNAVAILABLE"
        assert "sha256" in summaries["broken"].reason
        assert plane.model_ready("toy") and not plane.model_ready("broken")
        with pytest.raises(ModelNotFound):
            plane.model_ready("nope")
        with pytest.raises(ModelNotReady):
            plane.model_info("broken")
        assert not plane.ready()
        assert {e.name for e in plane.index()} == {"toy", "broken"}

    with_plane(repository, body)


def test_a_handle_without_runtime_is_not_ready(bundle_repository: Path) -> None:
    manifest = read_manifest(bundle_repository / "toy" / "1")

    async def body(plane: DataPlane) -> None:
        bare = ModelHandle("toy", 1, manifest, "CPUExecutionProvider")
        with pytest.raises(ModelNotReady):
            await plane.infer(bare, rows(1, 0), 0.9)

    with_plane(bundle_repository, body)


def test_batched_answers_equal_unbatched_answers(bundle_repository: Path) -> None:
    """Concurrent requests of mixed sizes and levels, batched, match one-by-one answers."""
    requests = [
        (rows(n, seed), level)
        for seed, (n, level) in enumerate(
            [(1, 0.95), (7, 0.9), (1, 0.95), (30, 0.5), (2, 0.999), (1, 0.95)] * 5
        )
    ]

    async def batched(plane: DataPlane) -> list[PredictionResult]:
        handle = plane.resolve("toy")
        return list(await asyncio.gather(*(plane.infer(handle, b, lv) for b, lv in requests)))

    async def one_by_one(plane: DataPlane) -> list[PredictionResult]:
        handle = plane.resolve("toy")
        return [await plane.infer(handle, b, lv) for b, lv in requests]

    together = with_plane(bundle_repository, batched, max_queue_delay_us=20_000, max_batch_size=32)
    alone = with_plane(bundle_repository, one_by_one, max_queue_delay_us=0)
    for (batch, level), a, b in zip(requests, together, alone, strict=True):
        assert a.confidence_level == b.confidence_level == level
        assert a.probabilities.shape == (batch.rows, 3)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
        np.testing.assert_allclose(a.lower, b.lower, atol=1e-6)
        np.testing.assert_allclose(a.upper, b.upper, atol=1e-6)
        np.testing.assert_array_equal(a.prediction_sets, b.prediction_sets)
        assert a.labels == b.labels
