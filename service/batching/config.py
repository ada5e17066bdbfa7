"""One batching configuration, from the settings to every version's batcher."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    """How one model version's requests are batched and shed (the settings' names and units).

    ``max_queued_rows`` None: unbounded; ``max_queue_wait_s`` None: no deadline;
    ``inline_max_us`` 0: the idle fast path is off (service.batching.batcher says what each does).
    """

    max_batch_size: int = 256
    max_queue_delay_us: int = 0
    max_queued_rows: int | None = None
    max_queue_wait_s: float | None = None
    inline_max_us: int = 0
    #: Seconds a shed request is told to wait (Retry-After).
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.max_queued_rows is not None and self.max_queued_rows < 1:
            raise ValueError(f"max_queued_rows must be >= 1 or None, got {self.max_queued_rows}")
        if self.max_queue_wait_s is not None and not self.max_queue_wait_s > 0:
            raise ValueError(f"max_queue_wait_s must be > 0 or None, got {self.max_queue_wait_s}")
        if self.retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {self.retry_after_s}")
        if self.inline_max_us < 0:
            raise ValueError(f"inline_max_us must be >= 0, got {self.inline_max_us}")
