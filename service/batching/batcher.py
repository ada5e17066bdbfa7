"""Dynamic batching: concatenate concurrent requests into one inference call per model version.

Requests wait until ``max_batch_size`` rows are queued or the oldest has waited
``max_queue_delay_us``; then one ``run`` call over the concatenated columns executes in the
batcher's single worker thread and each caller gets exactly its own rows back, in order. While a
batch runs, new requests keep queuing, so a busy model batches more (Triton's behaviour). A request
is never split: one larger than ``max_batch_size`` runs as a batch of its own. A delay of 0 turns
batching off: each request runs on its own in the worker thread.

An optional ``derive`` function turns a batch's output into per-row arrays for one request
parameter (the pipeline passes the confidence level and derives probabilities, intervals and
sets). It runs in the worker thread, once per batch and distinct level, so that per-row numpy
work is paid per batch rather than per request, and stays off the event loop.

When ``run`` fails for a batch of several requests, each of them is run again on its own, so only
the request that really fails gets the error and the others their answers (a malformed value in
one request must not fail its neighbours: docs/architecture.md, "Request path", step 4).

Load shedding (both off by default): ``max_queued_rows`` bounds the rows waiting for the worker;
a request that would exceed it fails at once with :class:`~service.errors.Overloaded` (never
queued), except into an empty queue, so a request larger than the bound is still served.
``deadline_s`` bounds how long a request may wait before its run starts; past it the request is
answered :class:`~service.errors.DeadlineExceeded` and its rows are never computed. Expired
requests are found by a timer on the oldest queued request (deadlines fall in queue order, so they
expire as a prefix of the queue) and again whenever a batch is cut.
With a delay of 0 the bound counts the rows handed to the worker and not yet answered (the running
request's included), and a request still waiting for the worker thread at its deadline is
cancelled there; a request whose run has started is always answered.

The delay's effective resolution is the event loop's timer resolution (about 1 ms with epoll or
libuv): a delay below that still batches, but waits up to about a millisecond.

The idle fast path (``inline_max_s``, off by default): a small request (at most
:data:`INLINE_MAX_ROWS` rows) that finds this version idle (nothing queued, nothing running) runs
right on the event loop, skipping the hand-off to the worker thread and back, which is most of
what a lone request waits for on a small CPU graph. It is taken only while the last small batch
measured (run and derive) took at most ``inline_max_s`` (the faster of the last two, so that one
run stretched by preemption does not count), so a model too slow to run on the loop never blocks
it for long: two slow runs in a row send the next requests back to the worker thread, where every
small batch is measured again. Unless the HTTP server holds no other request, such a request
first waits in the queue for one pass of the event loop: requests that arrive together (many
connections read in one pass) join it and batch in the worker thread; only a request still alone
then runs inline (docs/architecture.md, "Request path").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic

import numpy as np
from numpy.typing import NDArray

from service.batching.config import BatchingConfig
from service.batching.records import (
    DEADLINE_EXCEEDED,
    OVERLOADED,
    BatchObserver,
    BatchOutput,
    BatchStats,
    Columns,
    D,
    DeriveFunction,
    HeldRequests,
    RowBatch,
    RunFunction,
    ShedObserver,
    ShedStats,
)
from service.errors import DeadlineExceeded, Overloaded

logger = logging.getLogger(__name__)

#: The largest request the idle fast path runs on the event loop; larger ones always go to the
#: worker thread, since their run time grows with the rows and would hold up other connections.
INLINE_MAX_ROWS = 16


class _QueuedJob(Generic[D]):
    """A job handed to the worker's queue (delay 0) that its deadline may cancel."""

    __slots__ = ("expired", "job")

    def __init__(self, job: Future[_Ran[D]]) -> None:
        self.job = job
        self.expired = False

    def expire(self) -> None:
        # Future.cancel() succeeds only while the job still waits for the worker thread: a job
        # already running is left to finish and answer.
        self.expired = self.job.cancel()


class _Pending(Generic[D]):
    __slots__ = ("batch", "enqueued", "future", "level")

    def __init__(
        self,
        batch: RowBatch,
        level: float | None,
        future: asyncio.Future[BatchOutput[D]],
        enqueued: float,
    ) -> None:
        self.batch = batch
        self.level = level
        self.future = future
        self.enqueued = enqueued


@dataclass(frozen=True, slots=True)
class _Ran(Generic[D]):
    """What the worker thread hands back for one batch."""

    output: NDArray[np.float32]
    derived: dict[float, D | Exception]
    started: float
    finished: float
    #: When the derived values were ready: ``derived_at - started`` is the batch's whole cost.
    derived_at: float


_DEFAULT_CONFIG = BatchingConfig()


class _NoRequests:
    """No server counts requests (a batcher driven in-process): a lone request waits a pass."""

    __slots__ = ()
    active = 0


class DynamicBatcher(Generic[D]):
    """Per-model-version request batcher; use it from one running event loop."""

    def __init__(
        self,
        run: RunFunction,
        config: BatchingConfig = _DEFAULT_CONFIG,
        *,
        derive: DeriveFunction[D] | None = None,
        model: str = "",
        version: int = 0,
        observers: Sequence[BatchObserver] = (),
        shed_observers: Sequence[ShedObserver] = (),
        requests: HeldRequests | None = None,
    ) -> None:
        """``run`` maps columns to [rows, K, C]; observers get a :class:`BatchStats` per call,
        ``shed_observers`` a :class:`ShedStats` per request shed. ``requests`` counts what the
        HTTP server holds now (the idle fast path reads it; None: nothing counts)."""
        self._run = run
        self._derive = derive
        self.config = config
        self.max_batch_size = config.max_batch_size
        self.max_queue_delay_s = config.max_queue_delay_us / 1e6
        self.max_queued_rows = config.max_queued_rows
        self.deadline_s = config.max_queue_wait_s
        self.retry_after_s = config.retry_after_s
        self._requests = requests if requests is not None else _NoRequests()
        self.model = model
        self.version = version
        self._observers = tuple(observers)
        self._shed_observers = tuple(shed_observers)
        # One worker thread per model version: one inference at a time per model, which is
        # what a small CPU graph wants (intra-op threads parallelise inside the call), and the
        # event loop never blocks on onnxruntime.
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"probserve-infer-{model}-{version}"
        )
        self._pending: deque[_Pending[D]] = deque()
        self._pending_rows = 0
        # Delay 0: rows handed to the worker and not answered yet (waiting or running).
        self._alone_rows = 0
        # The consumer sleeps on this future; submit() resolves it only when the consumer is
        # idle or the batch just became full, so a request costs no wake-up in between.
        self._wakeup: asyncio.Future[None] | None = None
        self._idle = True
        self._consumer: asyncio.Task[None] | None = None
        # At most one timer, due at the oldest queued request's deadline.
        self._expiry: asyncio.TimerHandle | None = None
        self._closed = False
        self._in_flight = 0
        self.inline_max_s = config.inline_max_us / 1e6
        # Unknown until a small batch ran in the worker thread: the first never runs inline.
        self._small_costs_s = (float("inf"), float("inf"))

    @property
    def batching(self) -> bool:
        """False when the delay is 0: every request runs alone."""
        return self.max_queue_delay_s > 0

    @property
    def queued_rows(self) -> int:
        """Rows the load-shedding bound counts now (delay 0: also the row running)."""
        return self._pending_rows + self._alone_rows

    async def submit(self, batch: RowBatch) -> NDArray[np.float32]:
        """Member probabilities [rows, K, C] for exactly this request's rows, in order."""
        return (await self.submit_timed(batch)).member_probabilities

    async def submit_timed(self, batch: RowBatch, level: float | None = None) -> BatchOutput[D]:
        """Like :meth:`submit`, with timings and, given a ``level``, this request's derived rows.

        An error from ``run`` for a batch of several requests makes each run again alone: only
        the requests that fail alone get their own error, as raised. An error from ``derive``
        fails the requests that asked for that level. Raises :class:`~service.errors.Overloaded`
        at once when the queue bound is reached, :class:`~service.errors.DeadlineExceeded` when
        the request waited past ``deadline_s`` without starting.
        """
        if self._closed:
            # A request that resolved this version just before a swap still runs on it (the
            # session lives as long as someone holds the model), without shedding.
            return await self._run_alone(batch, level)
        if (
            self.inline_max_s > 0
            and batch.rows <= INLINE_MAX_ROWS
            # The faster of the last two: one run stretched by preemption on a busy machine
            # does not evict a fast model, two slow ones in a row do.
            and min(self._small_costs_s) <= self.inline_max_s
            and not self._in_flight
            and not self._pending
            and not self._alone_rows
        ):
            # Run now if nothing can join: batching is off, or the HTTP server holds no other
            # request (0 where no server counts, e.g. in-process: then wait one pass).
            if not self.batching or self._requests.active == 1:
                return self._run_inline(batch, level)
            return await self._inline_unless_joined(batch, level)
        limit = self.max_queued_rows
        if limit is not None:
            queued = self._pending_rows + self._alone_rows
            if queued and queued + batch.rows > limit:
                self._shed(OVERLOADED, 1, batch.rows)
                raise Overloaded(
                    f"model {self.model!r} version {self.version} is overloaded "
                    f"({queued} rows queued, limit {limit}); retry later",
                    retry_after_s=self.retry_after_s,
                    model=self.model,
                    version=self.version,
                )
        if not self.batching:
            return await self._run_alone(batch, level)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchOutput[D]] = loop.create_future()
        self._pending.append(_Pending(batch, level, future, time.perf_counter()))
        self._pending_rows += batch.rows
        self._wake_consumer(loop)
        return await future

    async def _inline_unless_joined(self, batch: RowBatch, level: float | None) -> BatchOutput[D]:
        """The idle fast path, after one pass of the event loop in the queue.

        Requests that arrive together (32 connections read in one pass of the loop) are handled
        one task after another: each found the version idle and ran alone on the loop, so under
        concurrent load nothing batched (94% of ONNX calls held one row at 32 connections).
        The request first waits in the queue for one pass of the loop; if it is still alone
        there it runs inline, otherwise it batches with the requests that joined it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchOutput[D]] = loop.create_future()
        item = _Pending(batch, level, future, time.perf_counter())
        self._pending.append(item)
        self._pending_rows += batch.rows
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if self._pending and self._pending[-1] is item:
                self._pending.pop()
                self._pending_rows -= batch.rows
            future.cancel()
            raise
        if len(self._pending) == 1 and self._pending[0] is item and not self._in_flight:
            self._pending.popleft()
            self._pending_rows -= batch.rows
            return self._run_inline(batch, level)
        if not future.done() and item in self._pending:
            self._wake_consumer(loop)
        return await future

    def _wake_consumer(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the consumer, arm the queue deadline and wake a consumer waiting for work."""
        if self._consumer is None:
            self._consumer = loop.create_task(self._consume(), name=f"batcher-{self.model}")
        if self.deadline_s is not None and self._expiry is None:
            self._expiry = loop.call_later(self.deadline_s, self._expire_queued)
        wakeup = self._wakeup
        if (
            wakeup is not None
            and not wakeup.done()
            and (self._idle or self._pending_rows >= self.max_batch_size)
        ):
            wakeup.set_result(None)

    async def close(self) -> None:
        """Stop batching after the queued and running requests finish; idempotent.

        Requests submitted afterwards still run, one at a time, so a caller that resolved this
        version before a swap is never failed by it.
        """
        self._closed = True
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        if self._consumer is not None:
            await asyncio.shield(self._consumer)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        while self._in_flight:
            await asyncio.sleep(0.001)
        self._executor.shutdown(wait=False)

    # -- the worker thread ---------------------------------------------------------------------

    def _run_batch(self, batches: Sequence[RowBatch], levels: set[float]) -> _Ran[D]:
        # Concatenation copies happen here too, off the event loop.
        if len(batches) == 1:
            columns: Columns = batches[0].columns
        else:
            columns = {
                name: np.concatenate([b.columns[name] for b in batches])
                for name in batches[0].columns
            }
        started = time.perf_counter()
        out = self._run(columns)
        finished = time.perf_counter()
        expected = sum(b.rows for b in batches)
        if out.shape[0] != expected:
            raise RuntimeError(f"model returned {out.shape[0]} rows for a batch of {expected}")
        derived: dict[float, D | Exception] = {}
        if self._derive is not None:
            for level in levels:
                try:
                    derived[level] = self._derive(out, level)
                except Exception as exc:  # fails only the requests that asked for this level
                    derived[level] = exc
        ran = _Ran(out, derived, started, finished, time.perf_counter())
        if expected <= INLINE_MAX_ROWS:
            # One tuple store, read by the event loop: the last two small batches' costs,
            # wherever they ran.
            self._small_costs_s = (self._small_costs_s[1], ran.derived_at - ran.started)
        return ran

    def _run_each(self, items: Sequence[_Pending[D]]) -> list[_Ran[D] | Exception]:
        """Each request of a failed batch on its own, in one trip to the worker thread."""
        outcomes: list[_Ran[D] | Exception] = []
        for item in items:
            levels = set() if item.level is None else {item.level}
            try:
                outcomes.append(self._run_batch((item.batch,), levels))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    # -- the event loop side -------------------------------------------------------------------

    def _run_inline(self, batch: RowBatch, level: float | None) -> BatchOutput[D]:
        """The idle fast path: run and derive right here, on the event loop."""
        levels = set() if level is None else {level}
        try:
            ran = self._run_batch((batch,), levels)
        except Exception:
            self._notify(batch.rows, 1, 0.0, 0.0, failed=True)
            raise
        self._notify(batch.rows, 1, 0.0, ran.finished - ran.started, failed=False)
        return _alone_output(ran, level, 0.0, batch.rows)

    async def _run_alone(self, batch: RowBatch, level: float | None) -> BatchOutput[D]:
        enqueued = time.perf_counter()
        levels = set() if level is None else {level}
        self._in_flight += 1
        queued: _QueuedJob[D] | None = None
        timer: asyncio.TimerHandle | None = None
        try:
            if self._closed:
                ran = await asyncio.to_thread(self._run_batch, (batch,), levels)
            else:
                self._alone_rows += batch.rows
                job = self._executor.submit(self._run_batch, (batch,), levels)
                if self.deadline_s is not None:
                    queued = _QueuedJob(job)
                    timer = asyncio.get_running_loop().call_later(self.deadline_s, queued.expire)
                try:
                    ran = await asyncio.wrap_future(job)
                finally:
                    self._alone_rows -= batch.rows
                    if timer is not None:
                        timer.cancel()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if queued is None or not queued.expired or (task is not None and task.cancelling()):
                raise
            self._shed(DEADLINE_EXCEEDED, 1, batch.rows)
            raise self._deadline_error() from None
        except Exception:
            self._notify(batch.rows, 1, 0.0, 0.0, failed=True)
            raise
        finally:
            self._in_flight -= 1
        wait = ran.started - enqueued
        self._notify(batch.rows, 1, wait, ran.finished - ran.started, failed=False)
        return _alone_output(ran, level, wait, batch.rows)

    async def _consume(self) -> None:
        try:
            await self._consume_loop()
        except BaseException as exc:
            # Unexpected (a bug, or the loop shutting down): fail whoever is queued rather than
            # leave them waiting forever, and let the next submit() start a fresh consumer.
            error = exc if isinstance(exc, Exception) else RuntimeError("batcher stopped")
            while self._pending:
                item = self._pending.popleft()
                if not item.future.done():
                    item.future.set_exception(error)
            self._pending_rows = 0
            raise
        finally:
            self._consumer = None

    async def _consume_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending or not self._closed:
            if not self._pending:
                self._idle = True
                self._wakeup = loop.create_future()
                await self._wakeup
                continue
            self._idle = False
            if self._pending_rows < self.max_batch_size and not self._closed:
                remaining = self._pending[0].enqueued + self.max_queue_delay_s - time.perf_counter()
                if remaining > 0:
                    # Sleep until the oldest request's deadline, or until submit() reports a
                    # full batch, whichever comes first.
                    self._wakeup = loop.create_future()
                    timer = loop.call_later(remaining, _resolve, self._wakeup)
                    await self._wakeup
                    timer.cancel()
                    continue
            items = self._take()
            if items:
                await self._execute(items)

    def _take(self) -> list[_Pending[D]]:
        """Cut the next batch: whole requests, oldest first, up to max_batch_size rows."""
        if self.deadline_s is not None:
            self._drop_expired(time.perf_counter())  # never compute for a caller gone 503
        taken: list[_Pending[D]] = []
        rows = 0
        while self._pending:
            item = self._pending[0]
            size = item.batch.rows
            if taken and rows + size > self.max_batch_size:
                break
            self._pending.popleft()
            self._pending_rows -= size
            if item.future.done():  # the caller was cancelled while queued: skip its rows
                continue
            taken.append(item)
            rows += size
        return taken

    def _expire_queued(self) -> None:
        """Timer callback: answer the expired queued requests, re-arm for the next oldest."""
        self._expiry = None
        deadline_s = self.deadline_s
        if deadline_s is None:
            return
        now = time.perf_counter()
        self._drop_expired(now)
        if self._pending:
            due = self._pending[0].enqueued + deadline_s - now
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(max(due, 0.0), self._expire_queued)

    def _drop_expired(self, now: float) -> None:
        # Every request gets the same deadline_s and the queue is in submit order, so the
        # expired requests are a prefix of the queue.
        deadline_s = self.deadline_s
        assert deadline_s is not None
        requests = rows = 0
        while self._pending and self._pending[0].enqueued + deadline_s <= now:
            item = self._pending.popleft()
            self._pending_rows -= item.batch.rows
            if not item.future.done():
                item.future.set_exception(self._deadline_error())
                requests += 1
                rows += item.batch.rows
        if requests:
            self._shed(DEADLINE_EXCEEDED, requests, rows)

    async def _execute(self, items: list[_Pending[D]]) -> None:
        loop = asyncio.get_running_loop()
        rows = sum(item.batch.rows for item in items)
        levels = {item.level for item in items if item.level is not None}
        self._in_flight += 1
        try:
            try:
                ran = await loop.run_in_executor(
                    self._executor, self._run_batch, [item.batch for item in items], levels
                )
            except Exception as exc:
                self._notify(rows, len(items), 0.0, 0.0, failed=True)
                if len(items) == 1:
                    if not items[0].future.done():
                        items[0].future.set_exception(exc)
                    return
                # One bad request (a value onnxruntime refuses, say) must not fail the others:
                # run each alone so the error lands on the request that causes it. The consumer
                # carries on with the next batch afterwards.
                try:
                    await self._rerun_each(items)
                except Exception:  # the reruns could not even start: nobody may wait forever
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(exc)
                return
        finally:
            self._in_flight -= 1
        inference = ran.finished - ran.started
        offset = 0
        max_wait = 0.0
        for item in items:
            stop = offset + item.batch.rows
            wait = ran.started - item.enqueued
            max_wait = max(max_wait, wait)
            self._deliver(item, ran, offset, stop, wait, inference, rows, len(items) > 1)
            offset = stop
        self._notify(rows, len(items), max_wait, inference, failed=False)

    async def _rerun_each(self, items: list[_Pending[D]]) -> None:
        live = [item for item in items if not item.future.done()]
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(self._executor, self._run_each, live)
        for item, outcome in zip(live, outcomes, strict=True):
            size = item.batch.rows
            if isinstance(outcome, Exception):
                if not item.future.done():
                    item.future.set_exception(outcome)
                self._notify(size, 1, 0.0, 0.0, failed=True, rerun=True)
                continue
            wait = outcome.started - item.enqueued
            inference = outcome.finished - outcome.started
            self._deliver(item, outcome, 0, size, wait, inference, size, False)
            self._notify(size, 1, wait, inference, failed=False, rerun=True)

    @staticmethod
    def _deliver(
        item: _Pending[D],
        ran: _Ran[D],
        start: int,
        stop: int,
        wait: float,
        inference: float,
        batch_rows: int,
        shared: bool,
    ) -> None:
        """Hand ``item`` its rows ``start:stop`` of ``ran`` (or its level's derive error)."""
        if item.future.done():  # a cancelled caller does not break the others
            return
        derived = None if item.level is None else ran.derived.get(item.level)
        if isinstance(derived, Exception):
            item.future.set_exception(derived)
            return
        if derived is not None and shared:
            derived = derived.take_rows(start, stop)
        item.future.set_result(
            BatchOutput(ran.output[start:stop], wait, inference, batch_rows, derived)
        )

    def _deadline_error(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"request waited over {self.deadline_s:g} s in the queue of model {self.model!r} "
            f"version {self.version} and was not computed",
            model=self.model,
            version=self.version,
            deadline_s=self.deadline_s,
        )

    def _notify(
        self,
        rows: int,
        requests: int,
        wait: float,
        inference: float,
        *,
        failed: bool,
        rerun: bool = False,
    ) -> None:
        if not self._observers:
            return
        stats = BatchStats(self.model, self.version, rows, requests, wait, inference, failed, rerun)
        for observer in self._observers:
            try:
                observer(stats)
            except Exception:  # a broken metrics hook must not fail inference
                logger.exception("batch observer %r failed", observer)

    def _shed(self, reason: str, requests: int, rows: int) -> None:
        if not self._shed_observers:
            return
        stats = ShedStats(self.model, self.version, reason, requests, rows)
        for observer in self._shed_observers:
            try:
                observer(stats)
            except Exception:  # a broken metrics hook must not fail the answer
                logger.exception("shed observer %r failed", observer)


def _alone_output(ran: _Ran[D], level: float | None, wait: float, rows: int) -> BatchOutput[D]:
    """A request that ran alone: its output and derived rows, or its level's derive error."""
    derived = None if level is None else ran.derived.get(level)
    if isinstance(derived, Exception):
        raise derived
    return BatchOutput(ran.output, wait, ran.finished - ran.started, rows, derived)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
