"""Dynamic batching: concatenate concurrent requests into one inference call per model version.

Requests wait until ``max_batch_size`` rows are queued or the oldest has waited
``max_queue_delay_us``; then one ``run`` call over the concatenated columns executes in the
batcher's single worker thread and each caller gets exactly its own rows back, in order. While a
batch runs, new requests keep queuing, so a busy model batches more (Triton's behaviour). A request
is never split: one larger than ``max_batch_size`` runs as a batch of its own. A delay of 0 turns
batching off: each request runs on its own in the worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

Columns = Mapping[str, NDArray[np.generic]]
RunFunction = Callable[[Columns], NDArray[np.float32]]


class RowBatch(Protocol):
    """What a request hands the batcher (``service.dataplane.FeatureBatch`` satisfies it)."""

    @property
    def columns(self) -> dict[str, NDArray[np.generic]]:
        """Feature name -> [rows, 1] array."""

    @property
    def rows(self) -> int:
        """Number of rows in every column."""


@dataclass(frozen=True, slots=True)
class BatchOutput:
    """One request's share of a batch: its rows of the output and how long it took."""

    member_probabilities: NDArray[np.float32]  # [rows, K, C]
    queue_wait_seconds: float  # from submit until its batch started running
    inference_seconds: float  # the run() call of its batch
    batch_rows: int  # rows in the whole batch it ran in


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


class _Pending:
    __slots__ = ("batch", "enqueued", "future")

    def __init__(
        self, batch: RowBatch, future: asyncio.Future[BatchOutput], enqueued: float
    ) -> None:
        self.batch = batch
        self.future = future
        self.enqueued = enqueued


class DynamicBatcher:
    """Per-model-version request batcher; create and use it inside one running event loop."""

    def __init__(
        self,
        run: RunFunction,
        *,
        max_batch_size: int = 64,
        max_queue_delay_us: int = 0,
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
        self._pending: deque[_Pending] = deque()
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

    async def submit_timed(self, batch: RowBatch) -> BatchOutput:
        """Like :meth:`submit`, with the request's queue wait and its batch's inference time."""
        if not self.batching or self._closed:
            # Also after close(): a request that resolved this version just before a swap
            # still runs on it (the session lives as long as someone holds the model).
            return await self._run_alone(batch)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchOutput] = loop.create_future()
        self._pending.append(_Pending(batch, future, time.perf_counter()))
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

    # -- internals -----------------------------------------------------------------------------

    async def _run_alone(self, batch: RowBatch) -> BatchOutput:
        enqueued = time.perf_counter()
        self._in_flight += 1
        try:
            if self._closed:
                out, started, finished = await asyncio.to_thread(self._timed_run, batch.columns)
            else:
                loop = asyncio.get_running_loop()
                out, started, finished = await loop.run_in_executor(
                    self._executor, self._timed_run, batch.columns
                )
        except BaseException:
            self._notify(batch.rows, 1, 0.0, 0.0, failed=True)
            raise
        finally:
            self._in_flight -= 1
        wait, inference = started - enqueued, finished - started
        self._notify(batch.rows, 1, wait, inference, failed=False)
        return BatchOutput(out, wait, inference, batch.rows)

    def _timed_run(self, columns: Columns) -> tuple[NDArray[np.float32], float, float]:
        started = time.perf_counter()
        out = self._run(columns)
        return out, started, time.perf_counter()

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

    def _take(self) -> list[_Pending]:
        """Cut the next batch: whole requests, oldest first, up to max_batch_size rows."""
        taken: list[_Pending] = []
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

    async def _execute(self, items: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        rows = sum(item.batch.rows for item in items)
        self._in_flight += 1
        try:
            out, started, finished = await loop.run_in_executor(
                self._executor, self._run_concatenated, [item.batch for item in items]
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
        inference = finished - started
        offset = 0
        max_wait = 0.0
        for item in items:
            size = item.batch.rows
            wait = started - item.enqueued
            max_wait = max(max_wait, wait)
            if not item.future.done():  # a cancelled caller does not break the others
                item.future.set_result(
                    BatchOutput(out[offset : offset + size], wait, inference, rows)
                )
            offset += size
        self._notify(rows, len(items), max_wait, inference, failed=False)

    def _run_concatenated(
        self, batches: list[RowBatch]
    ) -> tuple[NDArray[np.float32], float, float]:
        # Runs in the worker thread, so the concatenation copies stay off the event loop too.
        if len(batches) == 1:
            columns: Columns = batches[0].columns
        else:
            columns = {
                name: np.concatenate([b.columns[name] for b in batches])
                for name in batches[0].columns
            }
        started = time.perf_counter()
        out = self._run(columns)
        expected = sum(b.rows for b in batches)
        if out.shape[0] != expected:
            raise RuntimeError(f"model returned {out.shape[0]} rows for a batch of {expected}")
        return out, started, time.perf_counter()

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
