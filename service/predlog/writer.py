"""PredictionLog: a bounded queue of request arrays in front of a writer thread.

The request path only appends a record to a deque (``enqueue`` never blocks, never raises).
The writer thread turns a flush into one Arrow record batch per partition and hands it to the
store: the Parquet store spools it (fsync'd) and seals segments; PostgreSQL loads it with COPY,
and while PostgreSQL is unreachable the batches wait in pending spools on local disk, replayed
in order before newer rows (docs/architecture.md, "Prediction log").
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from service.predlog.batches import (
    Partition,
    columns_of,
    feedback_batch,
    partition_of,
    prediction_batch,
    utc_date,
)
from service.predlog.errors import PredictionLogError, StoreUnavailable
from service.predlog.layout import SchemaTooNew, file_metadata
from service.predlog.parquet_store import ParquetStore
from service.predlog.record import FeedbackCounts, FeedbackLabel, FeedbackRecord, PredictionRecord
from service.predlog.spool import SUFFIX, SpoolFile, orphans, read_spool
from service.predlog.urls import parse_log_url

logger = logging.getLogger(__name__)

# Row outcomes reported through ``on_rows`` are service.telemetry.metrics.LOG_OUTCOMES
# (probserve_prediction_log_rows_total{outcome}).
#: Seconds between warnings about dropped rows (a full queue would otherwise flood the log).
DROP_WARNING_INTERVAL_S = 10.0
#: Seconds between retention passes.
RETENTION_INTERVAL_S = 3600.0
#: Seconds an idle writer (nothing queued) sleeps between maintenance checks.
IDLE_TICK_S = 0.5
#: PostgreSQL's batches that wait for the database are spooled under this prefix.
PENDING_PREFIX = "pending-"
_MODEL_VERSION = attrgetter("model", "version")
_LOGGED_AT = attrgetter("logged_at")

Queued = PredictionRecord | FeedbackRecord


class Store(Protocol):
    """What the writer needs from a store; ``write`` raises StoreUnavailable or OSError."""

    def open(self) -> None:
        """Connect or create; StoreUnavailable when unreachable."""

    def write(self, partition: Partition, batch: pa.RecordBatch, batch_id: str) -> None:
        """Store one batch durably."""

    def delete_before(self, cutoff: float) -> int:
        """Retention."""

    def close(self) -> None:
        """Seal or disconnect."""


def _ignore(outcome: str, rows: int) -> None:
    """The default ``on_rows``: count nothing."""


class PredictionLog:
    """The durable prediction log of one process."""

    def __init__(
        self,
        url: str,
        *,
        queue_rows: int = 100_000,
        batch_rows: int = 8_192,
        flush_interval_s: float = 0.05,
        retry_interval_s: float = 2.0,
        spool_dir: Path = Path("./prediction-spool"),
        segment_rows: int = 200_000,
        segment_age_s: float = 60.0,
        retention_days: float | None = None,
        on_rows: Callable[[str, int], None] = _ignore,
    ) -> None:
        """Nothing is touched until ``start``; a malformed URL fails here (PredictionLogError).

        ``queue_rows`` bounds the rows waiting in memory; ``batch_rows`` the rows per flush;
        rows are flushed ``flush_interval_s`` after the first of them arrived (the most a
        SIGKILL can lose); a Parquet segment is sealed at ``segment_rows`` or
        ``segment_age_s``; an unreachable database is retried every ``retry_interval_s``.
        """
        try:
            location = parse_log_url(url)
        except ValueError as exc:
            raise PredictionLogError(str(exc)) from exc
        if location is None:
            raise PredictionLogError("the prediction log is off (URL 'none')")
        self._token = uuid.uuid4().hex[:16]
        self._spool_dir = Path(spool_dir)
        self._parquet: ParquetStore | None = None
        self._store: Store
        if location.kind == "parquet":
            assert location.url is not None
            self._parquet = ParquetStore(
                location.url,
                self._spool_dir,
                self._token,
                segment_rows=segment_rows,
                segment_age_s=segment_age_s,
            )
            self._store = self._parquet
        else:
            assert location.dsn is not None
            # psycopg is imported only where PostgreSQL is used.
            from service.predlog.postgres_store import PostgresStore

            self._store = PostgresStore(location.dsn)
        self._capacity = queue_rows
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._retry_interval_s = retry_interval_s
        self._retention_s = retention_days * 86400.0 if retention_days else None
        self._on_rows = on_rows
        self._seq = 0
        self._queue: collections.deque[Queued] = collections.deque()
        self._lock = threading.Lock()  # the queue's row count and the enqueue counter
        self._rows = 0
        self._enqueued = 0
        self._done = 0  # records stored, spooled or failed so far (writer thread)
        self._seal_wanted = 0
        self._sealed = 0
        self._done_cond = threading.Condition()
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._up = False
        self._pending: dict[Partition, SpoolFile] = {}
        self._pending_count = 0
        self._next_retry = 0.0
        self._next_retention = 0.0
        self._last_drop_warning = 0.0
        self._dropped_since_warning = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store and start the writer thread.

        An unreachable database or a log directory that cannot be made does not stop the server:
        batches are spooled and the writer keeps retrying. A layout newer than this code raises
        PredictionLogError with a one-line message.
        """
        try:
            self._open_store()
        except SchemaTooNew as exc:
            raise PredictionLogError(str(exc)) from exc
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def _open_store(self) -> None:
        try:
            self._store.open()
        except StoreUnavailable as exc:
            logger.warning("prediction log: store unavailable, spooling batches: %s", exc)
            self._up = False
            self._next_retry = time.monotonic() + self._retry_interval_s
            return
        self._up = True
        self._replay()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Drain the queue (stored or spooled), seal segments, stop the writer, close the store."""
        with self._lock:
            self._closed = True
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("prediction log: the writer did not stop within %.1f s", timeout_s)
                return
        else:
            self._drain()
        for spool in self._pending.values():  # left for the next process that starts
            spool.close()
        self._pending.clear()
        try:
            self._store.close()
        except (OSError, pa.ArrowException) as exc:
            logger.error("prediction log: closing the store failed: %s", exc)

    # -- request path ---------------------------------------------------------------------------

    def enqueue(self, record: Queued) -> bool:
        """Queue a served request's arrays; False (counted as dropped) when the queue is full."""
        try:
            n = record.rows
            with self._lock:
                accepted = not self._closed and self._rows + n <= self._capacity
                if accepted:
                    first = self._rows == 0
                    self._queue.append(record)
                    self._rows += n
                    self._enqueued += 1
                    full_batch = self._rows >= self._batch_rows
            if not accepted:
                self._dropped(n)
                return False
            # The first record wakes an idle writer (which then gathers for a flush interval);
            # a full batch cuts the gathering short. set() takes a lock; is_set() does not.
            if (first or full_batch) and not self._wake.is_set():
                self._wake.set()
            return True
        except Exception:  # the request path must never fail because of the log
            logger.exception("prediction log: enqueue failed")
            return False

    def _dropped(self, n: int) -> None:
        self._on_rows("dropped", n)
        now = time.monotonic()
        self._dropped_since_warning += n
        if now - self._last_drop_warning >= DROP_WARNING_INTERVAL_S:
            logger.warning(
                "prediction log: queue full (%d rows), dropped %d rows",
                self._capacity,
                self._dropped_since_warning,
            )
            self._last_drop_warning = now
            self._dropped_since_warning = 0

    def queue_rows(self) -> int:
        """Rows waiting in memory (the probserve_prediction_log_queue_rows gauge)."""
        return self._rows

    def flush(self, timeout_s: float, *, seal: bool = False) -> bool:
        """Wait until every record enqueued so far is stored or spooled (and, with ``seal``,
        every Parquet spool is a readable segment); False when ``timeout_s`` ran out."""
        with self._lock:
            target = self._enqueued
        if self._thread is None or not self._thread.is_alive():
            self._drain()
            if seal and self._parquet is not None:
                self._parquet.seal_all()
            return True
        with self._done_cond:
            self._seal_wanted += int(seal)
            wanted = self._seal_wanted
        self._wake.set()
        with self._done_cond:
            return self._done_cond.wait_for(
                lambda: self._done >= target and self._sealed >= wanted, timeout_s
            )

    # -- feedback -------------------------------------------------------------------------------

    def record_feedback(
        self, model: str, labels: Sequence[FeedbackLabel], classes: Collection[str]
    ) -> FeedbackCounts:
        """Queue the labels that name a class of ``model`` and wait until they are durable
        (blocking: call it from a thread). PredictionLogError when they cannot be queued."""
        valid = [item for item in labels if item.label in classes]
        if valid:
            record = FeedbackRecord(
                received_at=time.time(),
                model=model,
                request_ids=[item.request_id for item in valid],
                instances=[item.instance for item in valid],
                labels=[item.label for item in valid],
            )
            if not self.enqueue(record):
                raise PredictionLogError("the prediction log's queue is full")
            self.flush(10.0)
        return FeedbackCounts(accepted=len(valid), unknown=0, invalid=len(labels) - len(valid))

    # -- writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(IDLE_TICK_S)  # a first record, a full batch, flush() or stop()
            self._wake.clear()
            if not self._stopping and 0 < self._rows < self._batch_rows:
                # Gather what arrives within a flush interval into one batch: the interval is
                # also the most a SIGKILL can lose.
                self._wake.wait(self._flush_interval_s)
                self._wake.clear()
            try:
                self._drain()
                self._maintain()
            except Exception:  # keep the writer alive whatever a batch does
                logger.exception("prediction log: writer error")
            if self._stopping:
                with self._lock:
                    empty = not self._queue
                if empty:
                    if not self._up:
                        self._recover()  # last chance; what is left waits in the spool
                    return

    def _take(self, limit: int) -> list[Queued]:
        """Up to ``limit`` records, and no more than a batch of rows, from the queue's head."""
        taken: list[Queued] = []
        rows = 0
        with self._lock:
            while self._queue and rows < self._batch_rows and len(taken) < limit:
                record = self._queue.popleft()
                taken.append(record)
                rows += record.rows
            self._rows -= rows
        if rows:
            # Counted here, not in enqueue: a metric update on every request was a visible share
            # of the request path; every accepted record passes through here once.
            self._on_rows("queued", rows)
        return taken

    def _drain(self) -> None:
        """Store (or spool) what was queued when the drain began, a batch at a time."""
        # Records that arrive while a batch is stored wait for the next flush: taking them at
        # once made a second, tiny batch per flush, and each batch costs the same fixed work
        # (one Arrow array per column, an IPC message, an fsync) whatever its rows.
        with self._lock:
            left = len(self._queue)
        while left > 0 and (records := self._take(left)):
            left -= len(records)
            for partition, group in _by_partition(records).items():
                self._store_group(partition, group)
            with self._done_cond:
                self._done += len(records)
                self._done_cond.notify_all()

    def _store_group(self, partition: Partition, group: list[Queued]) -> None:
        try:
            batch = _batch(group)
        except Exception:  # a malformed record: convert one by one, so it costs only itself
            for record in group:
                try:
                    self._write(partition, _batch([record]))
                except Exception:
                    logger.exception("prediction log: could not convert a record; rows lost")
                    self._on_rows("failed", record.rows)
            return
        self._write(partition, batch)

    def _write(self, partition: Partition, batch: pa.RecordBatch) -> None:
        self._seq += 1
        batch_id = f"{self._token}-{self._seq}"
        if not self._up and time.monotonic() >= self._next_retry:
            self._recover()
        if self._up:
            try:
                self._store.write(partition, batch, batch_id)
            except StoreUnavailable as exc:
                logger.warning("prediction log: write failed, spooling batches: %s", exc)
                self._up = False
                self._next_retry = time.monotonic() + self._retry_interval_s
            except (OSError, pa.ArrowException) as exc:
                logger.error("prediction log: %d rows lost: %s", batch.num_rows, exc)
                self._on_rows("failed", batch.num_rows)
                return
            else:
                self._on_rows("written", batch.num_rows)
                return
        try:
            self._spool_pending(partition, batch, batch_id)
        except OSError as exc:
            logger.error("prediction log: spool failed, %d rows lost: %s", batch.num_rows, exc)
            self._on_rows("failed", batch.num_rows)
        else:
            self._on_rows("spooled", batch.num_rows)

    def _spool_pending(self, partition: Partition, batch: pa.RecordBatch, batch_id: str) -> None:
        spool = self._pending.get(partition)
        if spool is None or spool.schema.remove_metadata() != batch.schema:
            if spool is not None:
                spool.close()
            self._pending_count += 1
            name = f"{PENDING_PREFIX}{self._token}-{self._pending_count:06d}{SUFFIX}"
            meta = file_metadata(partition.kind, partition.model, partition.version, partition.date)
            spool = SpoolFile(self._spool_dir / name, batch.schema.with_metadata(meta))
            self._pending[partition] = spool
        spool.append(batch, batch_id)

    def _recover(self) -> None:
        """Reopen the database and replay the pending spools; stays down on failure."""
        self._next_retry = time.monotonic() + self._retry_interval_s
        try:
            self._store.open()
        except StoreUnavailable as exc:
            logger.debug("prediction log: database still unreachable: %s", exc)
            return
        except (SchemaTooNew, PredictionLogError) as exc:
            logger.error("prediction log: %s", exc)
            return
        self._up = True
        self._replay()

    def _replay(self) -> None:
        """Replay dead processes' pending spools, then ours, oldest first; batches already
        stored are skipped by id, so a replay cut short can simply run again."""
        from service.predlog.parquet_store import partition_from_metadata

        for spool in self._pending.values():  # ours: unlock, so the sweep below takes them
            spool.close()
        self._pending.clear()
        try:
            for orphan in orphans(self._spool_dir, PENDING_PREFIX):
                try:
                    schema, batches = read_spool(orphan.path)
                    if not batches:  # nothing to replay (died before its first batch)
                        orphan.done()
                        continue
                    partition = partition_from_metadata(schema.metadata)
                    for batch, batch_id in batches:
                        self._store.write(partition, batch, batch_id)
                        self._on_rows("replayed", batch.num_rows)
                except StoreUnavailable:
                    orphan.release()
                    raise
                except (OSError, ValueError, pa.ArrowException) as exc:
                    logger.error("prediction log: cannot replay %s: %s", orphan.path.name, exc)
                    orphan.release()
                    continue
                orphan.done()
        except StoreUnavailable as exc:
            logger.warning("prediction log: replay interrupted, will retry: %s", exc)
            self._up = False
            self._next_retry = time.monotonic() + self._retry_interval_s

    def _maintain(self) -> None:
        """Retry a failed database, seal aged segments, apply retention, answer seal requests."""
        if not self._up and time.monotonic() >= self._next_retry:
            self._recover()
        wanted = self._seal_wanted
        try:
            if self._parquet is not None:
                if wanted > self._sealed:
                    self._parquet.seal_all()
                else:
                    self._parquet.maintain()
        finally:
            with self._done_cond:
                self._sealed = max(self._sealed, wanted)
                self._done_cond.notify_all()
        if self._up and self._retention_s is not None and time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + RETENTION_INTERVAL_S
            try:
                deleted = self._store.delete_before(time.time() - self._retention_s)
            except (StoreUnavailable, OSError) as exc:
                logger.warning("prediction log: retention pass failed: %s", exc)
            else:
                if deleted:
                    logger.info("prediction log: retention deleted %d rows or partitions", deleted)


def _by_partition(records: list[Queued]) -> dict[Partition, list[Queued]]:
    """The records of a flush grouped by partition, in queue order within each."""
    # The common flush (one model version's predictions, one UTC day) is recognised with a few
    # C-level passes; a Partition built per record cost about 1 µs each on the writer thread.
    first = records[0]
    if (
        isinstance(first, PredictionRecord)
        and set(map(type, records)) == {PredictionRecord}
        and len(set(map(_MODEL_VERSION, records))) == 1
    ):
        times = list(map(_LOGGED_AT, records))
        if utc_date(min(times)) == utc_date(max(times)):  # the day is monotonic in time
            return {partition_of(first): records}
    groups: dict[Partition, list[Queued]] = {}
    for record in records:
        groups.setdefault(partition_of(record), []).append(record)
    return groups


def _batch(group: Sequence[Queued]) -> pa.RecordBatch:
    """The record batch of records of one partition."""
    if isinstance(group[0], FeedbackRecord):
        return feedback_batch([r for r in group if isinstance(r, FeedbackRecord)])
    predictions = [r for r in group if isinstance(r, PredictionRecord)]
    return prediction_batch(predictions, columns_of(predictions[0]))
