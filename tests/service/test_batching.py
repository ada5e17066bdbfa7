"""Dynamic batching against a real ONNX Runtime session: order, sizes, failures, cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import pytest

from service.batching import BatchingConfig, BatchOutput, DynamicBatcher
from service.runtime import LoadedModel, load_model
from service.serving import ConformalCalibration, derive_uncertainty
from service.types import FeatureBatch, Uncertainty
from tests.service.conftest import BundleFactory
from tests.service.support import Recorder, rows

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run one async scenario in a fresh event loop."""
    return asyncio.run(scenario())  # type: ignore[arg-type]


@pytest.fixture
def model(bundle_factory: BundleFactory) -> LoadedModel:
    return load_model(bundle_factory("toy"))


def test_concurrent_requests_of_many_sizes_get_their_own_rows_in_order(model: LoadedModel) -> None:
    sizes = [1, 3, 1, 7, 2, 1, 16, 1, 5, 40, 1, 2, 9, 1, 1, 4] * 4
    batches = [rows(n, seed) for seed, n in enumerate(sizes)]
    recorder = Recorder()

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(
            model.run,
            BatchingConfig(max_batch_size=16, max_queue_delay_us=5_000),
            observers=[recorder],
        )
        try:
            return await asyncio.gather(*(batcher.submit(b) for b in batches))
        finally:
            await batcher.close()

    results = run(scenario)
    for batch, got in zip(batches, results, strict=True):
        assert got.shape == (batch.rows, 4, 3)
        np.testing.assert_allclose(got, model.run(batch.columns), rtol=0, atol=1e-6)
    assert sum(s.rows for s in recorder.stats) == sum(sizes)
    # Several requests shared a call (otherwise nothing was batched) and no call exceeded the
    # limit unless it was one oversized request on its own.
    assert any(s.requests > 1 for s in recorder.stats)
    for s in recorder.stats:
        assert s.rows <= 16 or s.requests == 1
    assert any(s.rows == 40 and s.requests == 1 for s in recorder.stats)
    assert len(recorder.stats) < len(sizes)


def test_max_batch_size_cuts_full_batches_without_waiting_for_the_delay(
    model: LoadedModel,
) -> None:
    recorder = Recorder()
    batches = [rows(1, seed) for seed in range(10)]

    async def scenario() -> tuple[float, list[np.ndarray]]:
        batcher = DynamicBatcher(
            model.run,
            BatchingConfig(max_batch_size=4, max_queue_delay_us=300_000),
            observers=[recorder],
        )
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(batcher.submit(b)) for b in batches]
        first_full = await tasks[0]
        elapsed = time.perf_counter() - started
        rest = await asyncio.gather(*tasks[1:])
        await batcher.close()
        return elapsed, [first_full, *rest]

    elapsed, results = run(scenario)
    assert [s.rows for s in recorder.stats] == [4, 4, 2]
    assert elapsed < 0.25, "a full batch must run at once, not after the queue delay"
    assert recorder.stats[-1].max_queue_wait_seconds >= 0.25  # the partial batch waited
    for batch, got in zip(batches, results, strict=True):
        np.testing.assert_allclose(got, model.run(batch.columns), atol=1e-6)


def test_delay_zero_runs_every_request_alone(model: LoadedModel) -> None:
    recorder = Recorder()
    batches = [rows(n, seed) for seed, n in enumerate([1, 5, 2, 70])]

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(
            model.run, BatchingConfig(max_batch_size=4, max_queue_delay_us=0), observers=[recorder]
        )
        assert not batcher.batching
        out = await asyncio.gather(*(batcher.submit_timed(b) for b in batches))
        await batcher.close()
        assert all(o.queue_wait_seconds >= 0 and o.inference_seconds > 0 for o in out)
        return [o.member_probabilities for o in out]

    results = run(scenario)
    assert sorted(s.rows for s in recorder.stats) == [1, 2, 5, 70]
    assert all(s.requests == 1 for s in recorder.stats)
    for batch, got in zip(batches, results, strict=True):
        np.testing.assert_allclose(got, model.run(batch.columns), atol=1e-6)


def test_a_failing_run_fails_only_the_request_that_causes_it_and_the_batcher_keeps_working(
    model: LoadedModel,
) -> None:
    recorder = Recorder()
    good = [rows(1, seed) for seed in range(4)]
    # float64 where the graph takes float32: concatenated with a float32 request it makes the
    # whole batch's column float64, a real onnxruntime error for the batch it is in.
    poisoned = FeatureBatch({**good[0].columns, "x1": np.array([[1.0]])}, 1)

    async def scenario() -> list[object]:
        batcher = DynamicBatcher(
            model.run,
            BatchingConfig(max_batch_size=2, max_queue_delay_us=200_000),
            observers=[recorder],
        )
        # Batch 1 = poisoned + good[1]; batch 2 = good[2] + good[3].
        outcomes = await asyncio.gather(
            batcher.submit(poisoned),
            batcher.submit(good[1]),
            batcher.submit(good[2]),
            batcher.submit(good[3]),
            return_exceptions=True,
        )
        after = await batcher.submit(good[0])  # the next request is served normally
        await batcher.close()
        return [*outcomes, after]

    outcomes = run(scenario)
    assert isinstance(outcomes[0], Exception)
    assert "float" in str(outcomes[0]).lower()
    # good[1] shared the failed batch: run again alone, it gets its own rows.
    for batch, got in zip([good[1], good[2], good[3], good[0]], outcomes[1:], strict=True):
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, model.run(batch.columns), atol=1e-6)
    seen = [(s.rows, s.requests, s.failed, s.rerun) for s in recorder.stats]
    assert seen == [
        (2, 2, True, False),  # the failed batch
        (1, 1, True, True),  # poisoned, alone: fails again
        (1, 1, False, True),  # good[1], alone
        (2, 2, False, False),  # batch 2
        (1, 1, False, False),  # the request after
    ]


def test_cancelled_callers_do_not_break_the_batch(model: LoadedModel) -> None:
    batches = [rows(2, seed) for seed in range(6)]

    async def scenario() -> list[np.ndarray | None]:
        batcher = DynamicBatcher(
            model.run, BatchingConfig(max_batch_size=64, max_queue_delay_us=50_000)
        )
        tasks = [asyncio.ensure_future(batcher.submit(b)) for b in batches]
        await asyncio.sleep(0.005)  # all queued, none run yet
        tasks[1].cancel()
        tasks[4].cancel()
        out: list[np.ndarray | None] = []
        for task in tasks:
            try:
                out.append(await task)
            except asyncio.CancelledError:
                out.append(None)
        again = await batcher.submit(batches[1])
        await batcher.close()
        return [*out, again]

    results = run(scenario)
    assert results[1] is None and results[4] is None
    for i in (0, 2, 3, 5):
        np.testing.assert_allclose(results[i], model.run(batches[i].columns), atol=1e-6)
    np.testing.assert_allclose(results[6], model.run(batches[1].columns), atol=1e-6)


def test_close_drains_queued_requests_and_later_requests_still_run(model: LoadedModel) -> None:
    batches = [rows(3, seed) for seed in range(5)]

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(
            model.run, BatchingConfig(max_batch_size=64, max_queue_delay_us=100_000)
        )
        tasks = [asyncio.ensure_future(batcher.submit(b)) for b in batches[:4]]
        await asyncio.sleep(0)
        await batcher.close()  # must not wait the full delay nor drop the queued requests
        assert all(t.done() for t in tasks)
        late = await batcher.submit(batches[4])  # resolved before a swap, submitted after
        return [*(t.result() for t in tasks), late]

    for batch, got in zip(batches, run(scenario), strict=True):
        np.testing.assert_allclose(got, model.run(batch.columns), atol=1e-6)


def test_invalid_settings_are_refused(model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(model.run, BatchingConfig(max_batch_size=0))
    with pytest.raises(ValueError, match="max_queue_delay_us"):
        DynamicBatcher(model.run, BatchingConfig(max_queue_delay_us=-1))


def test_derived_results_are_cut_per_request_and_a_bad_level_fails_only_its_requests(
    model: LoadedModel,
) -> None:
    scores = np.sort(np.random.default_rng(0).uniform(size=100))
    labels = np.array(["no", "yes", "maybe"], dtype=object)

    def derive(members: np.ndarray, level: float) -> Uncertainty:
        return derive_uncertainty(
            members, level, conformal=ConformalCalibration(scores), class_labels=labels
        )

    requests = [
        (rows(n, seed), level)
        for seed, (n, level) in enumerate(
            [(2, 0.9), (1, 1.5), (5, 0.9), (3, 0.5), (1, 1.5), (4, 0.5)]
        )
    ]

    async def scenario() -> list[object]:
        batcher = DynamicBatcher(
            model.run, BatchingConfig(max_batch_size=64, max_queue_delay_us=50_000), derive=derive
        )
        out = await asyncio.gather(
            *(batcher.submit_timed(b, level) for b, level in requests), return_exceptions=True
        )
        await batcher.close()
        return out

    outcomes = run(scenario)
    for (batch, level), outcome in zip(requests, outcomes, strict=True):
        if level > 1:
            # student_t_quantile refuses a level outside (0, 1): a real error, for these alone.
            assert isinstance(outcome, ValueError)
            continue
        assert isinstance(outcome, BatchOutput) and outcome.derived is not None
        assert outcome.batch_rows == 16, "all six requests shared one run"
        alone = derive(model.run(batch.columns), level)
        got = outcome.derived
        np.testing.assert_allclose(got.probabilities, alone.probabilities, atol=1e-6)
        np.testing.assert_allclose(got.lower, alone.lower, atol=1e-6)
        np.testing.assert_allclose(got.upper, alone.upper, atol=1e-6)
        np.testing.assert_array_equal(got.prediction_sets, alone.prediction_sets)
        assert got.labels.tolist() == alone.labels.tolist()
