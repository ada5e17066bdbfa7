"""What the request path needs of one served version, built once at load time.

The data plane owns this step, not the runtime: ONNX Runtime gives member probabilities, and
turning them into means, intervals and sets per batch is the data plane's uncertainty step
(docs/architecture.md, "Request path"). :class:`VersionLoader` is the registry's one loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from service.batching import BatchObserver, DynamicBatcher
from service.runtime import ExecutionProviders, LoadedModel, load_model
from service.types import ModelHandle
from service.uncertainty import (
    conformal_threshold,
    ensemble_mean,
    logit_intervals,
    prediction_sets,
)


@dataclass(frozen=True, slots=True)
class Uncertainty:
    """What a prediction derives from member probabilities at one level; arrays are [N, ...]."""

    probabilities: NDArray[np.float64]  # [N, C]
    lower: NDArray[np.float64]  # [N, C]
    upper: NDArray[np.float64]  # [N, C]
    prediction_sets: NDArray[np.bool_]  # [N, C]
    labels: NDArray[np.object_]  # [N], the most probable class label

    def take_rows(self, start: int, stop: int) -> Uncertainty:
        """Rows ``start:stop`` as views (one request's share of a batch)."""
        return Uncertainty(
            self.probabilities[start:stop],
            self.lower[start:stop],
            self.upper[start:stop],
            self.prediction_sets[start:stop],
            self.labels[start:stop],
        )


def derive_uncertainty(
    member_probabilities: NDArray[np.float32],
    level: float,
    *,
    conformal_scores: NDArray[np.float64],
    class_labels: NDArray[np.object_],
) -> Uncertainty:
    """Mean probabilities, ``level`` intervals, ``level`` conformal sets and labels, [N, ...].

    Runs in the batcher's worker thread once per batch, so its numpy calls are paid per batch.
    """
    probabilities = ensemble_mean(member_probabilities)
    lower, upper = logit_intervals(member_probabilities, level, mean=probabilities)
    sets = prediction_sets(probabilities, conformal_threshold(conformal_scores, level))
    labels: NDArray[np.object_] = class_labels[probabilities.argmax(axis=1)]
    return Uncertainty(probabilities, lower, upper, sets, labels)


@dataclass(frozen=True, eq=False)
class ServedVersion:
    """A loaded model, its batcher and the manifest data the hot path reads, as numpy arrays."""

    model: LoadedModel
    batcher: DynamicBatcher[Uncertainty]
    #: Class labels as an object array, so ``class_labels[argmax]`` labels a whole batch at once.
    class_labels: NDArray[np.object_]
    #: The calibration split's conformal scores, sorted ascending.
    conformal_scores: NDArray[np.float64]

    @classmethod
    def create(
        cls,
        model: LoadedModel,
        *,
        max_batch_size: int = 64,
        max_queue_delay_us: int = 0,
        max_queued_rows: int | None = None,
        max_queue_wait_s: float | None = None,
        batch_observers: Sequence[BatchObserver] = (),
        inline_max_us: int = 0,
    ) -> ServedVersion:
        """Precompute the arrays from the manifest and build the version's batcher."""
        manifest = model.manifest
        labels = np.array(manifest.classes, dtype=object)
        scores = np.asarray(manifest.calibration.conformal_scores, dtype=np.float64)
        batcher: DynamicBatcher[Uncertainty] = DynamicBatcher(
            model.run,
            max_batch_size=max_batch_size,
            max_queue_delay_us=max_queue_delay_us,
            derive=partial(derive_uncertainty, conformal_scores=scores, class_labels=labels),
            model=model.name,
            version=model.version,
            observers=batch_observers,
            max_queued_rows=max_queued_rows,
            deadline_s=max_queue_wait_s,
            inline_max_s=inline_max_us / 1e6,
        )
        return cls(model, batcher, labels, scores)

    async def close(self) -> None:
        """Drain the batcher: queued and running batches finish on this version."""
        await self.batcher.close()


@dataclass(frozen=True)
class VersionLoader:
    """Bundle directory -> verified, warmed-up, served :class:`ModelHandle` (the registry's loader).

    Everything the registry need not know (providers, threads, batching, telemetry of batches)
    is fixed here once, so the registry deals only in versions and policy.
    """

    providers: ExecutionProviders
    intra_op_threads: int = 1
    max_batch_size: int = 64
    max_queue_delay_us: int = 0
    max_queued_rows: int | None = None  # None: unbounded
    max_queue_wait_s: float | None = None  # None: no deadline
    batch_observers: Sequence[BatchObserver] = field(default=())
    inline_max_us: int = 0  # 0: the idle fast path is off

    def __call__(self, path: Path, name: str, version: int) -> ModelHandle:
        """Load, verify and warm up one version (blocking: the registry runs it in a thread)."""
        loaded = load_model(
            path,
            name=name,
            version=version,
            providers=self.providers,
            intra_op_threads=self.intra_op_threads,
        )
        runtime = ServedVersion.create(
            loaded,
            max_batch_size=self.max_batch_size,
            max_queue_delay_us=self.max_queue_delay_us,
            max_queued_rows=self.max_queued_rows,
            max_queue_wait_s=self.max_queue_wait_s,
            batch_observers=self.batch_observers,
            inline_max_us=self.inline_max_us,
        )
        return ModelHandle(
            loaded.name, loaded.version, loaded.manifest, loaded.provider, runtime=runtime
        )
