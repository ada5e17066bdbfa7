"""Dynamic request batching per model version."""

from service.batching.batcher import (
    BatchObserver,
    BatchOutput,
    BatchStats,
    DynamicBatcher,
    RowBatch,
)

__all__ = ["BatchObserver", "BatchOutput", "BatchStats", "DynamicBatcher", "RowBatch"]
