"""The protocol-agnostic data plane: resolve a model, run a validated batch, derive uncertainty.

HTTP adapters (native v1, KServe V2) decode their payloads into a :class:`FeatureBatch` with the
codecs, call :meth:`DataPlane.infer` and encode the :class:`PredictionResult`. Nothing here knows
about HTTP. Metrics and the prediction log hook in through :class:`PredictionObserver`.

INTERFACE DRAFT: the types below are the contract between the HTTP layer and the runtime; the
method bodies are filled in by the runtime work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from service.bundle import Manifest


@dataclass(frozen=True)
class FeatureBatch:
    """Validated inputs, one column per feature in graph order.

    Numeric columns are float32 [N, 1] (NaN = missing); categorical columns are object [N, 1]
    of str ("" = missing, which the graph sends to the unknown bucket).
    """

    columns: dict[str, NDArray[np.generic]]
    rows: int


@dataclass(frozen=True)
class ModelHandle:
    """One loaded, verified model version; requests keep the handle they resolved."""

    name: str
    version: int
    manifest: Manifest
    provider: str  # e.g. "CPUExecutionProvider" or "CUDAExecutionProvider"


@dataclass(frozen=True)
class PredictionResult:
    """Everything a protocol adapter needs to answer; arrays are [N, C] unless noted."""

    handle: ModelHandle
    confidence_level: float
    probabilities: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    prediction_sets: NDArray[np.bool_]
    labels: list[str]  # [N], the most probable class label
    timings: dict[str, float] = field(default_factory=dict)  # seconds: queue_wait, inference


class PredictionObserver(Protocol):
    """Hook for metrics and the prediction log; called after every successful inference."""

    def on_prediction(
        self, batch: FeatureBatch, result: PredictionResult, request_id: str, endpoint: str
    ) -> None:
        """Record one request's predictions; must not block (queue work, do not do I/O)."""
