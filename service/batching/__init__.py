"""Dynamic request batching per model version."""

from service.batching.batcher import (
    BatchObserver,
    BatchOutput,
    BatchStats,
    DeriveFunction,
    DynamicBatcher,
    RowBatch,
    RowSliceable,
)

__all__ = [
    "BatchObserver",
    "BatchOutput",
    "BatchStats",
    "DeriveFunction",
    "DynamicBatcher",
    "RowBatch",
    "RowSliceable",
]
