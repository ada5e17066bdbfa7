"""What the batcher takes, hands back and reports: request and result shapes, observer events."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, Protocol, Self, TypeVar

import numpy as np
from numpy.typing import NDArray

from service.errors import DeadlineExceeded, Overloaded

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
    """What a request hands the batcher (``service.types.FeatureBatch`` satisfies it)."""

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
    """What one run() call did, for metrics (histograms of batch size, wait and run time).

    Observers get one per ``run`` call. When a batch of several requests fails they get, in
    order: the failed batch (``failed=True``, ``rerun=False``, timings 0), then one per request
    run again on its own (``requests=1``, ``rerun=True``, ``failed`` for the ones that failed
    again, timings 0 for those). A request alone in a failed batch is not run again.
    """

    model: str
    version: int
    rows: int
    requests: int
    max_queue_wait_seconds: float
    inference_seconds: float
    failed: bool
    rerun: bool = False  # one request of a failed batch, run again on its own


#: ``ShedStats.reason`` values: the ``error_type`` of the answer the shed requests got.
OVERLOADED: Final = Overloaded.error_type
DEADLINE_EXCEEDED: Final = DeadlineExceeded.error_type


@dataclass(frozen=True, slots=True)
class ShedStats:
    """Requests answered without being computed (load shedding), for metrics.

    ``reason`` is ``"overloaded"`` (refused by ``submit``, one event per refused request) or
    ``"deadline_exceeded"`` (expired in the queue; one event per group expired together).
    """

    model: str
    version: int
    reason: str
    requests: int
    rows: int


BatchObserver = Callable[[BatchStats], None]
ShedObserver = Callable[[ShedStats], None]


class HeldRequests(Protocol):
    """What the HTTP server counts: requests handed to the app and not finished yet."""

    active: int
