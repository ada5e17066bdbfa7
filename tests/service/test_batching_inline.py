"""The idle fast path: which requests run on the event loop and which go to the worker thread.

Each case records the thread a real ONNX Runtime call ran in, so a path taken wrongly fails.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from service.batching import BatchingConfig, DynamicBatcher
from service.batching.batcher import INLINE_MAX_ROWS
from service.runtime import LoadedModel, load_model
from tests.service.conftest import BundleFactory
from tests.service.support import Recorder, rows


@pytest.fixture
def model(bundle_factory: BundleFactory) -> LoadedModel:
    return load_model(bundle_factory("toy"))


class ThreadLog:
    """Wraps ``run``: records the thread of every call, optionally sleeping first."""

    def __init__(self, run: Callable[[dict[str, NDArray[np.generic]]], NDArray[np.float32]]):
        self._run = run
        self.threads: list[str] = []
        self.sleep_s = 0.0
        self.fail = False

    def __call__(self, columns: dict[str, NDArray[np.generic]]) -> NDArray[np.float32]:
        self.threads.append(threading.current_thread().name)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail:
            raise ValueError("refused by the test")
        return self._run(columns)


LOOP = threading.main_thread().name


class Held:
    """What the HTTP server would count: the requests it holds now."""

    def __init__(self, active: int = 0) -> None:
        self.active = active


def batcher(
    log: ThreadLog,
    inline_s: float,
    *,
    max_batch_size: int = 256,
    requests: Held | None = None,
    **kwargs: Any,
) -> DynamicBatcher[object]:
    config = BatchingConfig(
        max_batch_size=max_batch_size, max_queue_delay_us=1, inline_max_us=round(inline_s * 1e6)
    )
    return DynamicBatcher(log, config, requests=requests, **kwargs)


def test_a_lone_small_request_runs_on_the_loop_once_the_model_is_measured_fast(
    model: LoadedModel,
) -> None:
    log = ThreadLog(model.run)
    recorder = Recorder()

    async def scenario() -> list[NDArray[np.float32]]:
        b = batcher(log, 1.0, observers=[recorder])
        outs = [await b.submit(rows(n, seed)) for seed, n in enumerate((1, 1, INLINE_MAX_ROWS))]
        await b.close()
        return outs

    outs = asyncio.run(scenario())
    # The first run is unmeasured, so it goes to the worker; the next two are inline.
    assert log.threads[0] != LOOP and log.threads[1:] == [LOOP, LOOP]
    for seed, (n, out) in enumerate(zip((1, 1, INLINE_MAX_ROWS), outs, strict=True)):
        np.testing.assert_array_equal(out, model.run(rows(n, seed).columns))
    assert [s.rows for s in recorder.stats] == [1, 1, INLINE_MAX_ROWS]
    assert all(s.max_queue_wait_seconds == 0.0 for s in recorder.stats[1:])


def test_larger_requests_and_a_zero_budget_never_run_on_the_loop(model: LoadedModel) -> None:
    log = ThreadLog(model.run)

    async def scenario() -> None:
        b = batcher(log, 1.0)
        await b.submit(rows(1, 0))  # measured fast
        await b.submit(rows(INLINE_MAX_ROWS + 1, 1))
        off = batcher(log, 0.0)
        for seed in range(3):
            await off.submit(rows(1, seed))
        await b.close()
        await off.close()

    asyncio.run(scenario())
    assert log.threads[1] != LOOP  # one row over the bound
    assert all(t != LOOP for t in log.threads[2:])  # budget 0: the fast path is off


def test_a_model_slower_than_the_budget_goes_back_to_the_worker_thread(
    model: LoadedModel,
) -> None:
    log = ThreadLog(model.run)

    async def scenario() -> None:
        b = batcher(log, 0.005)
        await b.submit(rows(1, 0))  # worker: measured fast
        log.sleep_s = 0.02
        await b.submit(rows(1, 1))  # inline, but takes 20 ms > 5 ms: costs (fast, slow)
        await b.submit(rows(1, 2))  # the faster of the two still fits: inline, (slow, slow)
        await b.submit(rows(1, 3))  # two slow in a row: the worker, measured slow again
        log.sleep_s = 0.0
        await b.submit(rows(1, 4))  # still (slow, slow): the worker, measured fast
        await b.submit(rows(1, 5))  # (slow, fast): inline
        await b.close()

    asyncio.run(scenario())
    where = ["loop" if t == LOOP else "worker" for t in log.threads]
    assert where == ["worker", "loop", "loop", "worker", "worker", "loop"]


def test_requests_arriving_while_the_model_is_busy_batch_in_the_worker(
    model: LoadedModel,
) -> None:
    log = ThreadLog(model.run)
    recorder = Recorder()

    async def scenario() -> None:
        b = batcher(log, 1.0, observers=[recorder], max_batch_size=64)
        await b.submit(rows(1, 0))
        log.sleep_s = 0.05  # hold the worker so the next ones find the model busy
        first = asyncio.ensure_future(b.submit(rows(INLINE_MAX_ROWS + 1, 1)))
        await asyncio.sleep(0.01)
        log.sleep_s = 0.0
        await asyncio.gather(first, *(b.submit(rows(1, s)) for s in range(2, 6)))
        await b.close()

    asyncio.run(scenario())
    assert LOOP not in log.threads
    # The four lone rows queued behind the busy worker and ran as one batch.
    assert [s.requests for s in recorder.stats] == [1, 1, 4]


def test_an_inline_failure_fails_only_that_request_and_is_counted(model: LoadedModel) -> None:
    log = ThreadLog(model.run)
    recorder = Recorder()

    async def scenario() -> NDArray[np.float32]:
        b = batcher(log, 1.0, observers=[recorder])
        await b.submit(rows(1, 0))
        log.fail = True
        with pytest.raises(ValueError, match="refused by the test"):
            await b.submit(rows(1, 1))
        log.fail = False
        out = await b.submit(rows(1, 2))
        await b.close()
        return out

    out = asyncio.run(scenario())
    assert log.threads[1:] == [LOOP, LOOP]
    assert [s.failed for s in recorder.stats] == [False, True, False]
    np.testing.assert_array_equal(out, model.run(rows(1, 2).columns))


def test_inline_budget_must_not_be_negative(model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="inline_max_us"):
        DynamicBatcher(model.run, BatchingConfig(inline_max_us=-1))


def test_requests_arriving_together_at_an_idle_version_batch_instead_of_each_running_alone(
    model: LoadedModel,
) -> None:
    # 32 connections read in one pass of the event loop become 32 tasks that each find the
    # version idle; each ran alone on the loop before (94% one-row ONNX calls under load).
    log = ThreadLog(model.run)
    recorder = Recorder()
    batches = [rows(1, seed) for seed in range(1, 9)]

    async def scenario() -> list[NDArray[np.float32]]:
        b = batcher(log, 1.0, observers=[recorder], max_batch_size=64)
        await b.submit(rows(1, 0))  # measured fast
        together = await asyncio.gather(*(b.submit(batch) for batch in batches))
        await b.submit(rows(1, 20))  # alone again: inline
        await b.close()
        return together

    outs = asyncio.run(scenario())
    assert [s.requests for s in recorder.stats] == [1, 8, 1]  # one ONNX call for the eight
    assert log.threads[1] != LOOP and log.threads[2] == LOOP
    for batch, out in zip(batches, outs, strict=True):  # its own row (batched: to rounding)
        np.testing.assert_allclose(out, model.run(batch.columns), rtol=1e-5, atol=1e-6)


def test_a_request_cancelled_while_waiting_to_run_inline_is_not_run(model: LoadedModel) -> None:
    log = ThreadLog(model.run)

    async def scenario() -> NDArray[np.float32]:
        b = batcher(log, 1.0)
        await b.submit(rows(1, 0))  # measured fast
        calls = len(log.threads)
        doomed = asyncio.ensure_future(b.submit(rows(1, 1)))
        await asyncio.sleep(0)  # it has queued itself for one pass of the loop
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert len(log.threads) == calls and b.queued_rows == 0  # never run, nothing left
        out = await b.submit(rows(1, 2))  # the version is idle again: inline
        assert log.threads[-1] == LOOP
        await b.close()
        return out

    out = asyncio.run(scenario())
    np.testing.assert_array_equal(out, model.run(rows(1, 2).columns))


def test_when_the_server_holds_only_this_request_it_runs_inline_without_waiting(
    model: LoadedModel,
) -> None:
    # The HTTP protocol counts the requests it holds; one means nobody can join, so the pass
    # of the loop is not waited for (here: requests submitted together, as if the count held).
    log = ThreadLog(model.run)
    recorder = Recorder()

    async def scenario() -> None:
        b = batcher(log, 1.0, observers=[recorder], max_batch_size=64, requests=Held(1))
        await b.submit(rows(1, 0))  # measured fast
        await asyncio.gather(*(b.submit(rows(1, seed)) for seed in range(1, 4)))
        await b.close()

    asyncio.run(scenario())
    assert [s.requests for s in recorder.stats] == [1, 1, 1, 1]
    assert log.threads[1:] == [LOOP, LOOP, LOOP]
