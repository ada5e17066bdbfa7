"""PredictionLog: a bounded queue in front of a writer thread that inserts in batches.

The request path only appends a record to a deque (``enqueue`` never blocks, never raises).
The writer thread turns records into rows, inserts them in batches, and when the database
fails spools them to local disk, retries periodically, and on recovery replays the spool in
order before newer rows (docs/architecture.md, "Telemetry seam").
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from service.predlog.errors import PredictionLogError, StoreUnavailable
from service.predlog.feedback import store_feedback
from service.predlog.record import (
    FeedbackCounts,
    FeedbackLabel,
    PredictionRecord,
    record_rows,
    records_rows,
)
from service.predlog.schema import Row, SchemaTooNew
from service.predlog.spool import Spool, orphans, read_rows
from service.predlog.sqlite_store import SqliteStore
from service.predlog.store import Store
from service.predlog.urls import parse_log_url

logger = logging.getLogger(__name__)

#: Row outcomes reported through ``on_rows`` (probserve_prediction_log_rows_total{outcome}).
OUTCOMES = ("queued", "written", "spooled", "replayed", "dropped", "failed")
#: Seconds between warnings about dropped rows (a full queue would otherwise flood the log).
DROP_WARNING_INTERVAL_S = 10.0
#: Seconds between retention passes.
RETENTION_INTERVAL_S = 3600.0
#: Seconds an idle writer (nothing queued) sleeps between maintenance checks (retry, retention).
IDLE_TICK_S = 1.0


def _ignore(outcome: str, rows: int) -> None:
    """The default ``on_rows``: count nothing."""


def open_store(url: str) -> Store:
    """The store a log URL names; PredictionLogError for a malformed or ``none`` URL."""
    try:
        location = parse_log_url(url)
    except ValueError as exc:
        raise PredictionLogError(str(exc)) from exc
    if location is None:
        raise PredictionLogError("the prediction log is off (URL 'none')")
    if location.kind == "sqlite":
        assert location.path is not None
        return SqliteStore(location.path)
    assert location.dsn is not None
    # psycopg is imported only where PostgreSQL is used (SQLite serving skips ~10 MiB of it).
    from service.predlog.postgres_store import PostgresStore

    return PostgresStore(location.dsn)


#: Rows converted between two points where the writer lets the event loop have the GIL, and how
#: long it steps aside there.
CONVERT_SLICE_ROWS = 128
YIELD_S = 0.0001


class PredictionLog:
    """The durable prediction log of one process."""

    def __init__(
        self,
        url: str,
        *,
        queue_rows: int = 100_000,
        batch_rows: int = 2_000,
        flush_interval_s: float = 0.02,
        retry_interval_s: float = 2.0,
        spool_dir: Path = Path("./prediction-spool"),
        retention_days: float | None = None,
        on_rows: Callable[[str, int], None] = _ignore,
    ) -> None:
        """Nothing connects until ``start``; a malformed URL fails here (PredictionLogError).

        ``queue_rows`` bounds the rows waiting in memory; ``batch_rows`` the rows per insert;
        rows are written ``flush_interval_s`` after the first of them arrived (the most a
        SIGKILL can lose; an idle writer sleeps); a failed database is retried every
        ``retry_interval_s``; ``on_rows(outcome, n)`` counts rows.
        """
        self._store = open_store(url)
        self._capacity = queue_rows
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._retry_interval_s = retry_interval_s
        self._retention_s = retention_days * 86400.0 if retention_days else None
        self._on_rows = on_rows
        self._token = uuid.uuid4().hex[:16]
        self._spool = Spool(Path(spool_dir), self._token)
        self._seq = 0
        self._queue: collections.deque[PredictionRecord] = collections.deque()
        self._lock = threading.Lock()  # the queue's row count and the enqueue counter
        self._rows = 0
        self._enqueued = 0  # records accepted so far
        self._done = 0  # records written, spooled or failed so far (writer thread)
        self._done_cond = threading.Condition()
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._up = False  # the store is open and took the last write
        self._next_retry = 0.0
        self._next_retention = 0.0
        self._last_drop_warning = 0.0
        self._dropped_since_warning = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the database (create or migrate its layout) and start the writer thread.

        A database that is unreachable does not stop the server: rows are spooled and the
        writer keeps retrying (PostgreSQL may start after the service in a compose stack). A
        configuration error (unusable SQLite file, layout newer than this code) raises
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
            logger.warning("prediction log: database unreachable, spooling rows: %s", exc)
            self._up = False
            self._next_retry = time.monotonic() + self._retry_interval_s
            return
        self._up = True
        self._replay()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Drain the queue (written or spooled), stop the writer thread, close the database."""
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
        self._spool.close()
        self._store.close()

    # -- request path ---------------------------------------------------------------------------

    def enqueue(self, record: PredictionRecord) -> bool:
        """Queue a served request's rows; False (counted as dropped) when the queue is full."""
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
            self._on_rows("queued", n)
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

    def flush(self, timeout_s: float) -> None:
        """Wait until every record enqueued so far is written or spooled (or ``timeout_s``)."""
        with self._lock:
            target = self._enqueued
        if self._thread is None or not self._thread.is_alive():
            self._drain()
            return
        self._wake.set()
        with self._done_cond:
            self._done_cond.wait_for(lambda: self._done >= target, timeout_s)

    # -- feedback -------------------------------------------------------------------------------

    def record_feedback(
        self, model: str, labels: Sequence[FeedbackLabel], classes: Collection[str]
    ) -> FeedbackCounts:
        """Store ground truth (blocking: call it from a thread). Flushes first so predictions
        just served are found. PredictionLogError when the database is unreachable."""
        self.flush(10.0)
        try:
            return store_feedback(self._store, model, labels, classes)
        except StoreUnavailable as exc:
            raise PredictionLogError(f"the prediction log is unreachable: {exc}") from exc

    # -- writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(IDLE_TICK_S)  # a first record, a full batch, flush() or stop()
            self._wake.clear()
            if not self._stopping and 0 < self._rows < self._batch_rows:
                # Gather what arrives within a flush interval into one write. Short intervals
                # keep each write small: converting rows holds the GIL and, on a server pinned
                # to one core, the core; a lone client's p99 with the log on was 6.0-6.5 ms
                # writing every 0.5 s and 2.9 ms every 10 ms (lean: 2.8 ms).
                self._wake.wait(self._flush_interval_s)  # cut short by a full batch or stop
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
                        # Last chance before exit, whatever the retry timer says: rows left
                        # in the spool wait for the next process that uses this directory.
                        self._recover()
                    return

    def _take(self) -> list[PredictionRecord]:
        taken: list[PredictionRecord] = []
        rows = 0
        with self._lock:
            while self._queue and rows < self._batch_rows:
                record = self._queue.popleft()
                taken.append(record)
                rows += record.rows
            self._rows -= rows
        return taken

    def _drain(self) -> None:
        """Write (or spool) everything queued, one batch at a time."""
        while records := self._take():
            rows: list[Row] = []
            try:
                rows = self._convert(records)
            except Exception:  # a malformed record: convert one by one, so it costs only itself
                for record in records:
                    try:
                        rows += record_rows(record, self._token, self._seq)
                    except Exception:
                        logger.exception("prediction log: could not convert a record; rows lost")
                        self._on_rows("failed", record.rows)
                    self._seq += record.rows
            if rows:
                self._write(rows)
            with self._done_cond:
                self._done += len(records)
                self._done_cond.notify_all()

    def _convert(self, records: list[PredictionRecord]) -> list[Row]:
        """All rows of ``records``, converted a slice at a time, letting the GIL go in between.

        Conversion is pure Python: a long stretch of it holds the GIL, and an event loop woken
        by a request meanwhile waits up to the interpreter's switch interval (5 ms) for it.
        Between slices of about CONVERT_SLICE_ROWS rows the writer sleeps briefly (a real
        sleep: ``sleep(0)`` may take the GIL straight back), with one insert for all of them.
        """
        rows: list[Row] = []
        start = 0
        while start < len(records):
            stop, size = start, 0
            while stop < len(records) and (
                size == 0 or size + records[stop].rows <= CONVERT_SLICE_ROWS
            ):
                size += records[stop].rows
                stop += 1
            rows += records_rows(records[start:stop], self._token, self._seq + len(rows))
            start = stop
            if start < len(records):
                time.sleep(YIELD_S)
        self._seq += len(rows)
        return rows

    def _write(self, rows: list[Row]) -> None:
        if not self._up and time.monotonic() >= self._next_retry:
            self._recover()
        if self._up:
            try:
                self._store.insert(rows)
            except StoreUnavailable as exc:
                logger.warning("prediction log: insert failed, spooling rows: %s", exc)
                self._up = False
                self._next_retry = time.monotonic() + self._retry_interval_s
            else:
                self._on_rows("written", len(rows))
                return
        try:
            self._spool.append(rows)
        except OSError as exc:
            logger.error("prediction log: spool write failed, %d rows lost: %s", len(rows), exc)
            self._on_rows("failed", len(rows))
        else:
            self._on_rows("spooled", len(rows))

    def _recover(self) -> None:
        """Reopen the database and replay the spool; stays down on failure."""
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
        """Replay dead processes' spool files, then ours, in order; rows already in the
        database are skipped by row_key, so a replay cut short can simply run again."""
        try:
            for orphan in orphans(self._spool.directory, self._spool.path):
                try:
                    for chunk in read_rows(orphan.path, self._batch_rows):
                        self._store.insert(chunk)
                        self._on_rows("replayed", len(chunk))
                except BaseException:
                    orphan.release()
                    raise
                orphan.done()
            for chunk in self._spool.read(self._batch_rows):
                self._store.insert(chunk)
                self._on_rows("replayed", len(chunk))
            self._spool.clear()
        except StoreUnavailable as exc:
            logger.warning("prediction log: replay interrupted, will retry: %s", exc)
            self._up = False
            self._next_retry = time.monotonic() + self._retry_interval_s

    def _maintain(self) -> None:
        """Retry a failed database with nothing new to write; delete rows past retention."""
        if not self._up and time.monotonic() >= self._next_retry:
            self._recover()
        if self._up and self._retention_s is not None and time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + RETENTION_INTERVAL_S
            try:
                deleted = self._store.delete_before(time.time() - self._retention_s)
            except StoreUnavailable as exc:
                logger.warning("prediction log: retention pass failed: %s", exc)
            else:
                if deleted:
                    logger.info("prediction log: retention deleted %d rows", deleted)
