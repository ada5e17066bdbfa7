"""The request pipeline below any protocol: real bundles and sessions, the uncertainty contract."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from service.bundle import read_manifest
from service.bundle.columns import graph_columns
from service.codecs.base import DecodeLimits
from service.errors import ModelNotFound, ModelNotReady
from service.metadata import list_models, model_info, model_ready
from service.pipeline import Pipeline
from service.registry import ModelRegistry
from service.telemetry import Telemetry
from service.types import FeatureBatch, InferenceRequest, ModelHandle, Prediction
from service.uncertainty import ensemble_mean
from tests.service.conftest import TEST_CLASSES, BundleFactory, make_registry
from tests.service.support import corrupt, rows

T = TypeVar("T")

LEVELS = [0.5, 0.8, 0.9, 0.95, 0.99, 0.999]


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run one async scenario in a fresh event loop."""
    return asyncio.run(scenario())  # type: ignore[arg-type]


class Recorder(Telemetry):
    """Telemetry that keeps every prediction it was told of."""

    def __init__(self) -> None:
        self.calls: list[Prediction] = []

    def prediction_served(self, prediction: Prediction) -> None:
        self.calls.append(prediction)


class Broken(Telemetry):
    """Telemetry that always fails: the prediction must still be answered."""

    def prediction_served(self, prediction: Prediction) -> None:
        raise RuntimeError("metrics backend down")


class Plane:
    """A started registry and the pipeline over it, as the server builds them."""

    def __init__(self, registry: ModelRegistry, telemetry: Telemetry | None) -> None:
        self.registry = registry
        limits = DecodeLimits(max_rows=50, default_level=0.95)
        self.pipeline = Pipeline(registry, telemetry or Telemetry(), limits)

    def resolve(self, name: str) -> ModelHandle:
        return self.pipeline.resolve(name)

    async def infer(
        self,
        handle: ModelHandle,
        batch: FeatureBatch,
        level: float,
        *,
        request_id: str = "",
        protocol: str = "",
    ) -> Prediction:
        """What the pipeline runs once a codec decoded a request."""
        request = InferenceRequest(batch, level)
        started = time.perf_counter()
        return await self.pipeline.predict(handle, request, request_id, protocol, started)


def with_plane(
    repository: Path,
    body: Callable[[Plane], Awaitable[T]],
    telemetry: Telemetry | None = None,
    **batching: Any,
) -> T:
    """Start a registry and pipeline over ``repository``, run ``body``, stop them."""

    async def scenario() -> T:
        plane = Plane(make_registry(repository, **batching), telemetry)
        await plane.registry.start()
        plane.pipeline.open = True
        try:
            return await body(plane)
        finally:
            plane.pipeline.open = False
            await plane.registry.stop()

    return run(scenario)


@pytest.mark.parametrize("delay_us", [0, 2_000])
def test_predictions_keep_the_uncertainty_contract(bundle_repository: Path, delay_us: int) -> None:
    batch = rows(200, seed=3)

    async def body(plane: Plane) -> list[Prediction]:
        handle = plane.resolve("toy")
        return [await plane.infer(handle, batch, level) for level in LEVELS]

    results = with_plane(bundle_repository, body, max_queue_delay_us=delay_us)
    previous_sets = None
    previous_width = None
    for level, result in zip(LEVELS, results, strict=True):
        p, lo, hi, sets = (
            result.uncertainty.probabilities,
            result.uncertainty.lower,
            result.uncertainty.upper,
            result.uncertainty.prediction_sets,
        )
        assert result.request.confidence_level == level
        assert p.shape == lo.shape == hi.shape == sets.shape == (200, 3)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert np.all((lo <= p) & (p <= hi))
        # (0, 1) in exact arithmetic; a saturated float64 sigmoid may reach 1.0 for wild spreads.
        assert np.all((lo >= 0) & (hi <= 1))
        label_index = np.array([TEST_CLASSES.index(label) for label in result.uncertainty.labels])
        np.testing.assert_array_equal(label_index, p.argmax(axis=1))
        assert np.all(sets[np.arange(200), label_index]), "the set contains the label"
        width = hi - lo
        if previous_sets is not None and previous_width is not None:
            assert np.all(sets >= previous_sets), "sets grow (weakly) with the level"
            assert np.all(width >= previous_width - 1e-12), "intervals widen with the level"
        previous_sets, previous_width = sets, width
        assert result.inference_s > 0 and result.queue_wait_s >= 0
    assert (
        results[0].uncertainty.prediction_sets.sum() < results[-1].uncertainty.prediction_sets.sum()
    )


def test_probabilities_are_the_mean_of_the_stored_sample_outputs(bundle_repository: Path) -> None:
    manifest = read_manifest(bundle_repository / "toy" / "1")
    columns = graph_columns(manifest.features, manifest.sample.inputs)
    rows_ = len(manifest.sample.outputs)

    async def body(plane: Plane) -> Prediction:
        return await plane.infer(plane.resolve("toy"), FeatureBatch(columns, rows_), 0.9)

    result = with_plane(bundle_repository, body)
    expected = ensemble_mean(np.asarray(manifest.sample.outputs))
    np.testing.assert_allclose(result.uncertainty.probabilities, expected, atol=1e-5)
    assert result.handle.version == 1


def test_telemetry_sees_every_success_with_request_id_and_protocol(
    bundle_repository: Path,
) -> None:
    recorder = Recorder()

    async def body(plane: Plane) -> Prediction:
        handle = plane.resolve("toy")
        bare = ModelHandle("toy", 1, handle.manifest, "CPUExecutionProvider")
        with pytest.raises(ModelNotReady):  # refused: no runtime to run it on
            await plane.infer(bare, rows(1, 0), 0.9)
        return await plane.infer(handle, rows(2, 1), 0.9, request_id="r-1", protocol="v1")

    result = with_plane(bundle_repository, body, recorder)
    assert len(recorder.calls) == 1, "a refused request is not reported"
    served = recorder.calls[0]
    assert (served.request.batch.rows, served.request_id, served.protocol) == (2, "r-1", "v1")
    assert served is result
    assert served.latency_s > 0


def test_broken_telemetry_does_not_fail_a_prediction(bundle_repository: Path) -> None:
    async def body(plane: Plane) -> Prediction:
        return await plane.infer(plane.resolve("toy"), rows(2, 1), 0.9)

    result = with_plane(bundle_repository, body, Broken())
    assert result.uncertainty.probabilities.shape == (2, 3)


def test_metadata_for_the_http_layer(bundle_factory: BundleFactory) -> None:
    repository = bundle_factory("toy").parent.parent
    corrupt(bundle_factory("broken"))

    async def body(plane: Plane) -> None:
        registry = plane.registry
        info = model_info(registry, "toy")
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
        summaries = {s.name: s for s in list_models(registry)}
        assert summaries["toy"].state == "READY" and summaries["toy"].default_version == 1
        assert summaries["broken"].state == "UNAVAILABLE"
        assert "sha256" in summaries["broken"].reason
        assert model_ready(registry, "toy") and not model_ready(registry, "broken")
        with pytest.raises(ModelNotFound):
            model_ready(registry, "nope")
        with pytest.raises(ModelNotReady):
            model_info(registry, "broken")
        assert not registry.ready()
        assert {e.name for e in registry.index()} == {"toy", "broken"}

    with_plane(repository, body)


def test_a_handle_without_runtime_is_not_ready(bundle_repository: Path) -> None:
    manifest = read_manifest(bundle_repository / "toy" / "1")

    async def body(plane: Plane) -> None:
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

    async def batched(plane: Plane) -> list[Prediction]:
        handle = plane.resolve("toy")
        return list(await asyncio.gather(*(plane.infer(handle, b, lv) for b, lv in requests)))

    async def one_by_one(plane: Plane) -> list[Prediction]:
        handle = plane.resolve("toy")
        return [await plane.infer(handle, b, lv) for b, lv in requests]

    together = with_plane(bundle_repository, batched, max_queue_delay_us=20_000, max_batch_size=32)
    alone = with_plane(bundle_repository, one_by_one, max_queue_delay_us=0)
    for (batch, level), a, b in zip(requests, together, alone, strict=True):
        assert a.request.confidence_level == b.request.confidence_level == level
        assert a.uncertainty.probabilities.shape == (batch.rows, 3)
        np.testing.assert_allclose(
            a.uncertainty.probabilities, b.uncertainty.probabilities, atol=1e-6
        )
        np.testing.assert_allclose(a.uncertainty.lower, b.uncertainty.lower, atol=1e-6)
        np.testing.assert_allclose(a.uncertainty.upper, b.uncertainty.upper, atol=1e-6)
        np.testing.assert_array_equal(a.uncertainty.prediction_sets, b.uncertainty.prediction_sets)
        assert a.uncertainty.labels.tolist() == b.uncertainty.labels.tolist()
