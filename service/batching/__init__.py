"""Dynamic request batching per model version."""

from service.batching.batcher import DynamicBatcher
from service.batching.config import BatchingConfig
from service.batching.records import (
    DEADLINE_EXCEEDED,
    OVERLOADED,
    BatchObserver,
    BatchOutput,
    BatchStats,
    DeriveFunction,
    HeldRequests,
    RowBatch,
    RowSliceable,
    ShedObserver,
    ShedStats,
)

__all__ = [
    "DEADLINE_EXCEEDED",
    "OVERLOADED",
    "BatchObserver",
    "BatchOutput",
    "BatchStats",
    "BatchingConfig",
    "DeriveFunction",
    "DynamicBatcher",
    "HeldRequests",
    "RowBatch",
    "RowSliceable",
    "ShedObserver",
    "ShedStats",
]
