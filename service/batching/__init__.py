"""Dynamic request batching per model version."""

from service.batching.batcher import DynamicBatcher
from service.batching.records import (
    DEADLINE_EXCEEDED,
    OVERLOADED,
    BatchObserver,
    BatchOutput,
    BatchStats,
    DeriveFunction,
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
    "DeriveFunction",
    "DynamicBatcher",
    "RowBatch",
    "RowSliceable",
    "ShedObserver",
    "ShedStats",
]
