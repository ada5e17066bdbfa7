"""Load shedding in the batcher: a bound on queued rows and a per-request queue deadline.

The worker is held busy by a ``run`` that blocks on a threading.Event until the test opens it:
fault injection of timing, so every assertion holds however fast or slow the machine is. The
deadline tests wait for a short real deadline to pass; none asserts on a measured time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import numpy as np
import pytest
from numpy.typing import NDArray

from service.batching import BatchingConfig, DynamicBatcher, ShedStats
from service.errors import DeadlineExceeded, Overloaded
from service.types import FeatureBatch, Uncertainty

T = TypeVar("T")

#: Short enough to keep the tests quick, long enough that a request submitted to an idle batcher
#: starts well inside it on a loaded CI machine.
DEADLINE_S = 0.3


class Gated:
    """``run`` echoing column ``x`` as [rows, 1, 1]; every call waits until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.calls: list[list[float]] = []  # the x values of every call, in order

    def __call__(self, columns: Mapping[str, NDArray[np.generic]]) -> NDArray[np.float32]:
        x = np.asarray(columns["x"], dtype=np.float32)
        self.calls.append(x.ravel().tolist())
        self.started.set()
        if not self.gate.wait(10):
            raise RuntimeError("the test never opened the gate")
        return x.reshape(-1, 1, 1)


def request(first: int, n: int) -> FeatureBatch:
    """``n`` rows with x = first, first+1, ... (so every computed row names its request)."""
    return FeatureBatch({"x": np.arange(first, first + n, dtype=np.float32).reshape(n, 1)}, n)


def batcher_for(
    gated: Gated, shed: list[ShedStats], **settings: Any
) -> DynamicBatcher[Uncertainty]:
    """A batcher over ``gated`` for model m version 1 whose shed events go to ``shed``;
    ``settings`` are BatchingConfig's."""
    config = BatchingConfig(**settings)
    return DynamicBatcher(gated, config, model="m", version=1, shed_observers=[shed.append])


async def worker_busy(gated: Gated) -> None:
    """Wait (bounded) until the worker is inside ``run``, blocked on the gate."""
    assert await asyncio.to_thread(gated.started.wait, 10), "the first request never started"


def run_gated(gated: Gated, scenario: Callable[[], Awaitable[T]]) -> T:
    """Run ``scenario`` in a fresh loop; open the gate however it ends, so a failure never
    leaves the worker blocked."""

    async def guarded() -> T:
        try:
            return await scenario()
        finally:
            gated.gate.set()

    return asyncio.run(guarded())


async def at_once(submitted: Awaitable[object]) -> Overloaded:
    """The Overloaded that ``submitted`` raises within one turn of the loop, never queueing."""
    task = asyncio.ensure_future(submitted)
    await asyncio.sleep(0)
    assert task.done(), "an overloaded submit must fail at once, not wait in the queue"
    error = task.exception()
    assert isinstance(error, Overloaded), error
    return error


def rows_of(out: object) -> list[float]:
    assert isinstance(out, np.ndarray)
    return [float(v) for v in out.ravel()]


def test_past_the_row_bound_submit_fails_at_once_and_queues_nothing() -> None:
    gated, shed = Gated(), list[ShedStats]()

    async def scenario() -> tuple[Overloaded, list[object]]:
        batcher = batcher_for(
            gated,
            shed,
            max_batch_size=2,
            max_queue_delay_us=1_000,
            max_queued_rows=6,
            retry_after_s=3,
        )
        running = asyncio.ensure_future(batcher.submit(request(0, 2)))  # a full batch: runs
        await worker_busy(gated)
        assert batcher.queued_rows == 0, "rows being computed are not queued"
        queued = [
            asyncio.ensure_future(batcher.submit(request(10, 3))),
            asyncio.ensure_future(batcher.submit(request(20, 2))),
        ]
        await asyncio.sleep(0)
        assert batcher.queued_rows == 5
        refused = await at_once(batcher.submit(request(30, 2)))  # 5 + 2 > 6
        assert batcher.queued_rows == 5, "a refused request is never queued"
        queued.append(asyncio.ensure_future(batcher.submit(request(40, 1))))  # 5 + 1 = 6 fits
        await asyncio.sleep(0)
        assert batcher.queued_rows == 6
        gated.gate.set()
        out = await asyncio.gather(running, *queued)
        await batcher.close()
        return refused, list(out)

    error, out = run_gated(gated, scenario)
    assert [rows_of(o) for o in out] == [[0, 1], [10, 11, 12], [20, 21], [40]]
    assert all(30.0 not in call for call in gated.calls), "the refused rows were never computed"
    assert error.status_code == 503 and error.error_type == "overloaded"
    assert error.retry_after_s == 3
    body = error.to_dict()
    assert body["retry_after_s"] == 3 and body["type"] == "overloaded" and body["model"] == "m"
    assert shed == [ShedStats("m", 1, "overloaded", 1, 2)]


def test_without_batching_the_bound_counts_rows_handed_to_the_worker() -> None:
    gated, shed = Gated(), list[ShedStats]()

    async def scenario() -> list[object]:
        batcher = batcher_for(gated, shed, max_queue_delay_us=0, max_queued_rows=2)
        running = asyncio.ensure_future(batcher.submit(request(0, 1)))
        await worker_busy(gated)
        waiting = asyncio.ensure_future(batcher.submit(request(10, 1)))
        await asyncio.sleep(0)
        assert batcher.queued_rows == 2
        await at_once(batcher.submit(request(20, 1)))
        gated.gate.set()
        out = await asyncio.gather(running, waiting)
        assert batcher.queued_rows == 0
        await batcher.close()
        return list(out)

    assert [rows_of(o) for o in run_gated(gated, scenario)] == [[0], [10]]
    assert gated.calls == [[0], [10]]
    assert shed == [ShedStats("m", 1, "overloaded", 1, 1)]


@pytest.mark.parametrize("delay_us", [1_000, 0])
def test_a_request_larger_than_the_bound_still_runs_when_nothing_is_queued(delay_us: int) -> None:
    gated, shed = Gated(), list[ShedStats]()
    gated.gate.set()

    async def scenario() -> object:
        batcher = batcher_for(gated, shed, max_queue_delay_us=delay_us, max_queued_rows=2)
        out = await batcher.submit(request(0, 5))
        await batcher.close()
        return out

    assert rows_of(run_gated(gated, scenario)) == [0, 1, 2, 3, 4]
    assert shed == []


def test_a_queued_request_past_its_deadline_is_answered_while_the_worker_is_busy() -> None:
    gated, shed = Gated(), list[ShedStats]()

    async def scenario() -> tuple[object, object]:
        batcher = batcher_for(
            gated, shed, max_batch_size=2, max_queue_delay_us=1_000, max_queue_wait_s=DEADLINE_S
        )
        running = asyncio.ensure_future(batcher.submit(request(0, 2)))
        await worker_busy(gated)
        late = [
            asyncio.ensure_future(batcher.submit(request(10, 1))),
            asyncio.ensure_future(batcher.submit(request(20, 1))),
        ]
        for task in late:
            with pytest.raises(DeadlineExceeded) as expired:
                await asyncio.wait_for(task, 5)
            assert expired.value.status_code == 503
            assert expired.value.error_type == "deadline_exceeded"
        # Answered by the timer: the worker is still inside the first run.
        assert not gated.gate.is_set() and not running.done()
        assert batcher.queued_rows == 0
        gated.gate.set()
        # The running request took longer than the deadline and is still answered: the deadline
        # is for waiting in the queue, not for computing.
        first = await running
        after = await batcher.submit(request(30, 1))  # the batcher keeps serving
        await batcher.close()
        return first, after

    first, after = run_gated(gated, scenario)
    assert rows_of(first) == [0, 1] and rows_of(after) == [30]
    assert gated.calls == [[0, 1], [30]], "the expired requests were never computed"
    assert all(s.reason == "deadline_exceeded" for s in shed)
    assert sum(s.requests for s in shed) == 2 and sum(s.rows for s in shed) == 2


def test_without_batching_a_request_waiting_for_the_worker_expires_uncomputed() -> None:
    gated, shed = Gated(), list[ShedStats]()

    async def scenario() -> tuple[object, object]:
        batcher = batcher_for(gated, shed, max_queue_delay_us=0, max_queue_wait_s=DEADLINE_S)
        running = asyncio.ensure_future(batcher.submit(request(0, 1)))
        await worker_busy(gated)
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(batcher.submit(request(10, 3)), 5)
        assert not running.done() and batcher.queued_rows == 1  # only the running row
        gated.gate.set()
        first = await running  # ran past its deadline, answered all the same
        after = await batcher.submit(request(30, 1))
        await batcher.close()
        return first, after

    first, after = run_gated(gated, scenario)
    assert rows_of(first) == [0] and rows_of(after) == [30]
    assert gated.calls == [[0], [30]]
    assert shed == [ShedStats("m", 1, "deadline_exceeded", 1, 3)]


def test_a_caller_cancelled_while_waiting_for_the_worker_is_dropped_not_counted() -> None:
    gated, shed = Gated(), list[ShedStats]()

    async def scenario() -> None:
        batcher = batcher_for(gated, shed, max_queue_delay_us=0, max_queue_wait_s=DEADLINE_S)
        running = asyncio.ensure_future(batcher.submit(request(0, 1)))
        await worker_busy(gated)
        waiting = asyncio.ensure_future(batcher.submit(request(10, 1)))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gated.gate.set()
        await running
        await batcher.close()

    run_gated(gated, scenario)
    assert gated.calls == [[0]] and shed == []


def test_invalid_shedding_settings_are_refused() -> None:
    gated = Gated()
    with pytest.raises(ValueError, match="max_queued_rows"):
        DynamicBatcher(gated, BatchingConfig(max_queued_rows=0))
    with pytest.raises(ValueError, match="max_queue_wait_s"):
        DynamicBatcher(gated, BatchingConfig(max_queue_wait_s=0))
    with pytest.raises(ValueError, match="retry_after_s"):
        DynamicBatcher(gated, BatchingConfig(retry_after_s=-1))


def test_a_request_expired_when_its_batch_is_cut_is_never_computed() -> None:
    # The queue timer is not the only guard: when the loop was held past a request's deadline
    # and a full batch wakes the consumer before that timer runs, cutting the batch must still
    # answer the expired request 503 rather than compute it.
    gated, shed = Gated(), list[ShedStats]()
    gated.gate.set()
    deadline_s = 1.0

    async def scenario() -> tuple[BaseException | None, object]:
        loop = asyncio.get_running_loop()
        batcher = batcher_for(
            gated, shed, max_batch_size=2, max_queue_delay_us=5_000_000, max_queue_wait_s=deadline_s
        )
        old = asyncio.ensure_future(batcher.submit(request(0, 1)))
        await asyncio.sleep(0.7 * deadline_s)  # queued; the consumer waits for a full batch
        # Next pass of the loop: the new request fills the batch (the consumer is woken, to run
        # on the pass after), then the loop is held half a deadline: the old request is past
        # its deadline, the new one is not, and on the following pass the consumer's wake-up
        # is ahead of the deadline timer in the loop's ready queue.
        new = asyncio.ensure_future(batcher.submit(request(10, 1)))
        loop.call_soon(time.sleep, 0.5 * deadline_s)
        done, _ = await asyncio.wait([old, new], timeout=5)
        assert len(done) == 2
        await batcher.close()
        return old.exception(), new.result()

    old_error, new_rows = run_gated(gated, scenario)
    assert isinstance(old_error, DeadlineExceeded), old_error
    assert rows_of(new_rows) == [10]
    assert gated.calls == [[10]], "the expired request was computed"
