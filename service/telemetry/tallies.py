"""Per-process metric tallies: plain numbers the request path adds to, folded into Prometheus.

A prometheus-client ``observe()``/``inc()`` takes a lock per call and, in multiprocess mode
(``--workers N``), writes the new value to an mmap file; the nine of a 1-row request cost about
8 us (15 us in multiprocess mode) on the request path (bench/metrics_cost.py). Here a request
adds Python ints (and a float sum) to the tally of each labelled child, bucketed with the child's
own bounds, and :meth:`Tallies.fold` adds what accumulated since the last fold to the children:
every 100 ms and before every scrape (service.telemetry.recorder). Counts stay exact; each
worker folds into its own children, which prometheus-client's multiprocess mode sums.

The in-flight gauge is folded too, as a level: publishing it at each fold replaces two mmap
writes per request, a scrape folds first (so its own worker's level is current), and another
worker's level is at most one fold old, which a gauge sampled every few seconds cannot tell.

One lock guards every tally of a :class:`Tallies`: the event loop, the batchers' worker threads
and the fold all touch them, and ``x += 1`` is a read and a write that another thread may split.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from service.telemetry.metrics import add_to_histogram, histogram_bounds

logger = logging.getLogger(__name__)


class HistogramTally:
    """Bucket counts and sum of one labelled histogram child, since the last fold."""

    __slots__ = ("_int_buckets", "bounds", "child", "counts", "total")

    def __init__(self, child: Any) -> None:
        """Bounds are the child's own (+Inf last), so values land in the same buckets."""
        self.child = child
        self.bounds = histogram_bounds(child)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        # The bucket of every int from 0 to the last finite bound: rows and set sizes skip the
        # search (an int compared with float bounds is the slow case of bisect).
        top = min(max(self.bounds[-2], -1.0), _MAX_INT_TABLE)
        self._int_buckets = [bisect_left(self.bounds, n) for n in range(int(top) + 1)]

    def observe(self, value: float) -> None:
        """One value, bucketed as ``Histogram.observe`` does (le is inclusive); under the lock."""
        # NaN is <= no bound: like observe, it reaches the sum and no bucket.
        if value == value:
            self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_int(self, value: int) -> None:
        """One int value (rows, set members), same buckets as :meth:`observe`; under the lock."""
        table = self._int_buckets
        if 0 <= value < len(table):
            self.counts[table[value]] += 1
        else:
            self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add(self, counts: Sequence[int], total: float) -> None:
        """Many values at once, already bucketed (``bucket_counts``); caller holds the lock."""
        mine = self.counts
        for index, count in enumerate(counts):
            mine[index] += count
        self.total += total

    def take(self) -> tuple[list[int], float] | None:
        """What accumulated since the last take, now zeroed; None when nothing did."""
        counts, total = self.counts, self.total
        # ``total`` alone misses observations of 0; ``any`` alone misses a NaN-only sum.
        if not total and not any(counts):
            return None
        self.counts, self.total = [0] * len(counts), 0.0
        return counts, total


#: The largest int whose bucket :class:`HistogramTally` keeps in a table (8192: ROW_BUCKETS).
_MAX_INT_TABLE = 8192.0


class CounterTally:
    """The increments of one labelled counter child since the last fold."""

    __slots__ = ("child", "count")

    def __init__(self, child: Any) -> None:
        """Starts at 0; the child keeps the running total."""
        self.child = child
        self.count = 0

    def take(self) -> int:
        """The increments since the last take, now zeroed."""
        count, self.count = self.count, 0
        return count


class Tallies:
    """Every tally of one app's metrics, their lock, and the fold into prometheus-client."""

    def __init__(self, in_flight: Any) -> None:
        """``in_flight``: the gauge the in-flight level is published to at each fold."""
        #: Held for every read-modify-write of a tally (request path, worker threads, fold).
        #: The request path takes it with acquire()/try/release(): ``with`` costs twice as much
        #: on CPython 3.11 (bench/metrics_cost.py).
        self.lock = threading.Lock()
        #: Requests started minus finished; published by the fold (a level, not a delta).
        self.in_flight = 0
        self._in_flight_gauge = in_flight
        self._published_in_flight: int | None = None
        # One tally per child, keyed by identity (the tally holds the child, so the id stays its
        # own): label sets looked up again, after an unload or past the caches' bound, add to
        # the same tally.
        self._histograms: dict[int, HistogramTally] = {}
        self._counters: dict[int, CounterTally] = {}

    def histogram(self, child: Any) -> HistogramTally:
        """The tally of a histogram child, created on first use."""
        with self.lock:
            tally = self._histograms.get(id(child))
            if tally is None:
                tally = self._histograms[id(child)] = HistogramTally(child)
            return tally

    def counter(self, child: Any) -> CounterTally:
        """The tally of a counter child, created on first use."""
        with self.lock:
            tally = self._counters.get(id(child))
            if tally is None:
                tally = self._counters[id(child)] = CounterTally(child)
            return tally

    def fold(self) -> None:
        """Add every tally's increments since the last fold to its child; publish in-flight.

        Callers run one fold at a time (ServiceTelemetry.fold), so the in-flight level they
        publish cannot go back in time.
        """
        with self.lock:
            # Only the swap happens under the lock the request path waits on.
            histograms = [(t.child, t.take()) for t in self._histograms.values()]
            counters = [(t.child, t.take()) for t in self._counters.values()]
            in_flight = self.in_flight
        for child, taken in histograms:
            if taken is not None:
                add_to_histogram(child, *taken)
        for child, count in counters:
            if count:
                child.inc(count)
        if in_flight != self._published_in_flight:
            self._in_flight_gauge.set(in_flight)
            self._published_in_flight = in_flight


class PeriodicFold:
    """A daemon thread that folds every ``interval_s`` until stopped (then folds once more)."""

    def __init__(self, fold: Callable[[], None], interval_s: float) -> None:
        """``fold`` runs on the thread: it must be thread-safe and never need the event loop."""
        self._fold = fold
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread; a second start while it runs does nothing."""
        if self._thread is not None:
            return
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-fold", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and fold what the last requests added."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join()
        self._fold()

    def _run(self) -> None:
        """Wait, fold, repeat; a failing fold is logged and the next one tries again."""
        stopping = self._stopping
        while not stopping.wait(self._interval_s):
            try:
                self._fold()
            except Exception:
                logger.exception("metrics fold failed")
