"""The Explainer service object for real: its queue bound, row limit, deadline and close."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace

import numpy as np
import pytest

from service.errors import InvalidInput, ModelNotReady
from service.explain import (
    Explainer,
    ExplainerBusy,
    ExplainerSettings,
    ExplainOutcome,
    ExplanationDeadlineExceeded,
)
from service.runtime import LoadedModel
from tests.service.explain_support import reference_batch, reference_columns, train_tiny_bundle

pytestmark = pytest.mark.slow  # trains a bundle

#: A job that runs for seconds on the tiny model (5.8 s measured): 20,000 sampled orders per
#: background row of 50 rows, five million model rows per instance, so tests can hold the worker.
SLOW = ExplainerSettings(max_exact_features=0, permutations=20_000)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return train_tiny_bundle(tmp_path_factory.mktemp("explainer_models"))


@pytest.fixture
def explainers() -> Iterator[list[Explainer]]:
    made: list[Explainer] = []
    yield made
    for explainer in made:
        explainer.close()


def wait_running(future: Future[ExplainOutcome], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not future.running():
        assert time.monotonic() < deadline, "the worker never took the job"
        time.sleep(0.005)


def test_explains_a_batch_and_reports_its_duration(
    model: LoadedModel, explainers: list[Explainer]
) -> None:
    explainer = Explainer.for_model(model, ExplainerSettings(background_size=30))
    explainers.append(explainer)
    outcome = explainer.submit(reference_batch(model, 0, 3), 0.9).result(timeout=60)
    assert len(outcome.explanations) == 3
    assert explainer.method == "exact"
    assert outcome.compute_s > 0
    assert outcome.duration_s == pytest.approx(outcome.queue_wait_s + outcome.compute_s)
    for e in outcome.explanations:
        assert e.confidence_level == 0.9
        assert np.abs(e.additivity_error).max() <= 1e-6
    # The same rows explained from a coroutine give the same numbers (same background, plan).
    again = asyncio.run(explainer.explain(reference_batch(model, 0, 3), 0.9))
    np.testing.assert_array_equal(
        again.explanations[2].attributions, outcome.explanations[2].attributions
    )


def test_row_limit(model: LoadedModel, explainers: list[Explainer]) -> None:
    explainer = Explainer.for_model(model, ExplainerSettings(max_rows=2))
    explainers.append(explainer)
    with pytest.raises(InvalidInput, match=r"'instances' has 3 rows, more than the limit of 2"):
        explainer.submit(reference_batch(model, 0, 3), 0.95)
    assert explainer.submit(reference_batch(model, 0, 2), 0.95).result(timeout=60)


def test_level_outside_the_allowed_range(model: LoadedModel, explainers: list[Explainer]) -> None:
    explainer = Explainer.for_model(model)
    explainers.append(explainer)
    with pytest.raises(InvalidInput, match=r"confidence_level must be between 0.5 and 0.999"):
        explainer.submit(reference_batch(model, 0, 1), 0.3)


def test_full_queue_is_refused_at_once(model: LoadedModel, explainers: list[Explainer]) -> None:
    explainer = Explainer.for_model(model, replace(SLOW, queue_size=2))
    explainers.append(explainer)
    running = explainer.submit(reference_batch(model, 0, 1), 0.95)
    wait_running(running)
    queued = [explainer.submit(reference_batch(model, i, 1), 0.95) for i in (1, 2)]
    started = time.perf_counter()
    with pytest.raises(ExplainerBusy) as caught:
        explainer.submit(reference_batch(model, 3, 1), 0.95)
    assert time.perf_counter() - started < 1.0  # refused, not queued behind the seconds-long jobs
    error = caught.value
    assert error.status_code == 503
    assert error.error_type == "explainer_busy"
    assert error.retry_after_s == 1
    assert "1 running, 2 queued" in error.message
    # Closing fails the queued jobs and stops the running one between model calls.
    started = time.perf_counter()
    explainer.close()
    assert time.perf_counter() - started < 5
    for future in [running, *queued]:
        with pytest.raises(ModelNotReady, match="explainer is closed"):
            future.result(timeout=5)
    with pytest.raises(ModelNotReady):
        explainer.submit(reference_batch(model, 0, 1), 0.95)


def test_deadline_stops_a_running_job_and_skips_a_queued_one(
    model: LoadedModel, explainers: list[Explainer]
) -> None:
    explainer = Explainer.for_model(model, replace(SLOW, deadline_s=0.5))
    explainers.append(explainer)
    batches = [reference_batch(model, i, 1) for i in (0, 1)]
    started = time.perf_counter()
    first = explainer.submit(batches[0], 0.95)
    # Its own, shorter deadline runs out while the first job holds the worker.
    second = explainer.submit(batches[1], 0.95, deadline_s=0.1)
    with pytest.raises(ExplanationDeadlineExceeded, match=r"ran .* over the deadline of 0.5 s"):
        first.result(timeout=30)
    # Abandoned between model calls: well before the seconds the whole job would take.
    assert time.perf_counter() - started < 2.0
    with pytest.raises(
        ExplanationDeadlineExceeded,
        match=r"waited .* in the queue and was not computed: over the deadline of 0.1 s",
    ):
        second.result(timeout=30)
    error = ExplanationDeadlineExceeded("x")
    assert (error.status_code, error.error_type) == (503, "explanation_deadline_exceeded")
    # The worker survives and serves the next job.
    fast = Explainer.for_model(model)
    explainers.append(fast)
    assert fast.submit(reference_batch(model, 0, 1), 0.95).result(timeout=60)


def test_predictions_run_while_an_explanation_computes(
    model: LoadedModel, explainers: list[Explainer]
) -> None:
    # The explainer's worker spends its time in ONNX Runtime and numpy, which release the GIL:
    # predictions on this thread complete while it computes (how fast is a benchmark's
    # question: bench/explain_cost.py measures their latency during an explain flood).
    explainer = Explainer.for_model(model, SLOW)
    explainers.append(explainer)
    row = reference_columns(model, 0, 1)
    job = explainer.submit(reference_batch(model, 0, 1), 0.95)
    wait_running(job)
    latencies = []
    for _ in range(200):
        started = time.perf_counter()
        model.run(row)
        latencies.append(time.perf_counter() - started)
    assert job.running()  # the explanation was computing the whole time
    assert len(latencies) == 200
    assert threading.active_count() >= 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("queue_size", 0, "queue_size must be at least 1, got 0"),
        ("deadline_s", 0.0, "deadline_s must be positive, got 0.0"),
        ("permutations", 3, "permutations must be an even number of at least 2"),
    ],
)
def test_settings_are_checked(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExplainerSettings(**{field: value})  # type: ignore[arg-type]


def test_a_cancelled_caller_frees_the_worker(
    model: LoadedModel, explainers: list[Explainer]
) -> None:
    explainer = Explainer.for_model(model, SLOW)
    explainers.append(explainer)
    batches = [reference_batch(model, i, 1) for i in (0, 1)]
    behind: list[Future[ExplainOutcome]] = []

    async def cancel_while_running() -> None:
        task = asyncio.ensure_future(explainer.explain(batches[0], 0.95))
        await asyncio.sleep(0.3)  # the worker has taken it: the queue was empty
        behind.append(explainer.submit(batches[1], 0.95))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_running())
    # The cancelled job (seconds of work left) stops at its next model call, and the job
    # queued behind it starts at once.
    wait_running(behind[0], seconds=1.0)
