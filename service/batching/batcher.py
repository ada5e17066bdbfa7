"""Dynamic batching: concatenate concurrent requests into one inference call per model version.

Requests wait until ``max_batch_size`` rows are queued or the oldest has waited
``max_queue_delay_us``; then one ``run`` call over the concatenated columns executes in the
batcher's single worker thread and each caller gets exactly its own rows back, in order. While a
batch runs, new requests keep queuing, so a busy model batches more (Triton's behaviour). A request
is never split: one larger than ``max_batch_size`` runs as a batch of its own. A delay of 0 turns
batching off: each request runs on its own in the worker thread.

An optional ``derive`` function turns a batch's output into per-row arrays for one request
parameter (the data plane passes the confidence level and derives probabilities, intervals and
sets). It runs in the worker thread, once per batch and distinct level, so that per-row numpy
work is paid per batch rather than per request, and stays off the event loop.

The delay's effective resolution is the event loop's timer resolution (about 1 ms with epoll or
libuv): a delay below that still batches, but waits up to about a millisecond.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, Self, TypeVar

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

Columns = Mapping[str, NDArray[np.generic]]
RunFunction = Callable[[Columns], NDArray[np.float32]]


class RowSliceable(Protocol):
    """What ``derive`` returns: per-row results of a whole batch that can be cut per request."""

    def take_rows(self, start: int, stop: int) -> Self:
        """Rows ``start:stop`` (views, not copies, where possible)."""


D = TypeVar("D", bound=RowSliceable)
#: (member probabilities of a whole batch, level) -> per-row results for that level.
DeriveFunction = Callable[[NDArray[np.float32], float], D]


class RowBatch(Protocol):
    """What a request hands the batcher (``service.dataplane.FeatureBatch`` satisfies it)."""

    @property
    def columns(self) -> dict[str, NDArray[np.generic]]:
        """Feature name -> [rows, 1] array."""

    @property
    def rows(self) -> int:
        """Number of rows in every column."""


@dataclass(frozen=True, slots=True)
class BatchOutput(Generic[D]):
    """One request's share of a batch: its rows of the output and how long it took."""

    member_probabilities: NDArray[np.float32]  # [rows, K, C]
    queue_wait_seconds: float  # from submit until its batch started running
    inference_seconds: float  # the run() call of its batch
    batch_rows: int  # rows in the whole batch it ran in
    derived: D | None = None  # this request's rows of derive(output, level), if asked


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one run() call did, for metrics (histograms of batch size, wait and run time)."""

    model: str
    version: int
    rows: int
    requests: int
    max_queue_wait_seconds: float
    inference_seconds: float
    failed: bool


BatchObserver = Callable[[BatchStats], None]


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


class DynamicBatcher(Generic[D]):
    """Per-model-version request batcher; use it from one running event loop."""

    def __init__(
        self,
        run: RunFunction,
        *,
        max_batch_size: int = 64,
        max_queue_delay_us: int = 0,
        derive: DeriveFunction[D] | None = None,
        model: str = "",
        version: int = 0,
        observers: Sequence[BatchObserver] = (),
    ) -> None:
        """``run`` maps columns to [rows, K, C]; observers get a :class:`BatchStats` per call."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {max_queue_delay_us}")
        self._run = run
        self._derive = derive
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_us / 1e6
        self.model = model
        self.version = version
        self._observers = tuple(observers)
        # One worker thread per model version: one inference at a time per model, which is
        # what a small CPU graph wants (intra-op threads parallelise inside the call), and the
        # event loop never blocks on onnxruntime.
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"probserve-infer-{model}-{version}"
        )
        self._pending: deque[_Pending[D]] = deque()
        self._pending_rows = 0
        # The consumer sleeps on this future; submit() resolves it only when the consumer is
        # idle or the batch just became full, so a request costs no wake-up in between.
        self._wakeup: asyncio.Future[None] | None = None
        self._idle = True
        self._consumer: asyncio.Task[None] | None = None
        self._closed = False
        self._in_flight = 0

    @property
    def batching(self) -> bool:
        """False when the delay is 0: every request runs alone."""
        return self.max_queue_delay_s > 0

    async def submit(self, batch: RowBatch) -> NDArray[np.float32]:
        """Member probabilities [rows, K, C] for exactly this request's rows, in order."""
        return (await self.submit_timed(batch)).member_probabilities

    async def submit_timed(self, batch: RowBatch, level: float | None = None) -> BatchOutput[D]:
        """Like :meth:`submit`, with timings and, given a ``level``, this request's derived rows.

        An error from ``run`` fails every request of that batch; an error from ``derive`` fails
        the requests that asked for that level.
        """
        if not self.batching or self._closed:
            # Also after close(): a request that resolved this version just before a swap
            # still runs on it (the session lives as long as someone holds the model).
            return await self._run_alone(batch, level)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchOutput[D]] = loop.create_future()
        self._pending.append(_Pending(batch, level, future, time.perf_counter()))
        self._pending_rows += batch.rows
        if self._consumer is None:
            self._consumer = loop.create_task(self._consume(), name=f"batcher-{self.model}")
        wakeup = self._wakeup
        if (
            wakeup is not None
            and not wakeup.done()
            and (self._idle or self._pending_rows >= self.max_batch_size)
        ):
            wakeup.set_result(None)
        return await future

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
        return _Ran(out, derived, started, finished)

    # -- the event loop side -------------------------------------------------------------------

    async def _run_alone(self, batch: RowBatch, level: float | None) -> BatchOutput[D]:
        enqueued = time.perf_counter()
        levels = set() if level is None else {level}
        self._in_flight += 1
        try:
            if self._closed:
                ran = await asyncio.to_thread(self._run_batch, (batch,), levels)
            else:
                loop = asyncio.get_running_loop()
                ran = await loop.run_in_executor(self._executor, self._run_batch, (batch,), levels)
        except Exception:
            self._notify(batch.rows, 1, 0.0, 0.0, failed=True)
            raise
        finally:
            self._in_flight -= 1
        wait, inference = ran.started - enqueued, ran.finished - ran.started
        self._notify(batch.rows, 1, wait, inference, failed=False)
        derived = None if level is None else ran.derived.get(level)
        if isinstance(derived, Exception):
            raise derived
        return BatchOutput(ran.output, wait, inference, batch.rows, derived)

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

    async def _execute(self, items: list[_Pending[D]]) -> None:
        loop = asyncio.get_running_loop()
        rows = sum(item.batch.rows for item in items)
        levels = {item.level for item in items if item.level is not None}
        self._in_flight += 1
        try:
            ran = await loop.run_in_executor(
                self._executor, self._run_batch, [item.batch for item in items], levels
            )
        except Exception as exc:
            # Fail exactly this batch's callers; the consumer carries on with the next batch.
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            self._notify(rows, len(items), 0.0, 0.0, failed=True)
            return
        finally:
            self._in_flight -= 1
        inference = ran.finished - ran.started
        offset = 0
        max_wait = 0.0
        for item in items:
            size = item.batch.rows
            stop = offset + size
            wait = ran.started - item.enqueued
            max_wait = max(max_wait, wait)
            if not item.future.done():  # a cancelled caller does not break the others
                derived = None if item.level is None else ran.derived.get(item.level)
                if isinstance(derived, Exception):
                    item.future.set_exception(derived)
                else:
                    if derived is not None and len(items) > 1:
                        derived = derived.take_rows(offset, stop)
                    item.future.set_result(
                        BatchOutput(ran.output[offset:stop], wait, inference, rows, derived)
                    )
            offset = stop
        self._notify(rows, len(items), max_wait, inference, failed=False)

    def _notify(
        self, rows: int, requests: int, wait: float, inference: float, *, failed: bool
    ) -> None:
        if not self._observers:
            return
        stats = BatchStats(self.model, self.version, rows, requests, wait, inference, failed)
        for observer in self._observers:
            try:
                observer(stats)
            except Exception:  # a broken metrics hook must not fail inference
                logger.exception("batch observer %r failed", observer)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
