"""Value types every layer shares: the registry, the pipeline, the codecs and telemetry.

They live here, not in the module that happens to produce them, so that no two layers import each
other to share a dataclass (docs/architecture.md, "Layers").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from service.bundle import Manifest

if TYPE_CHECKING:  # the served runtime imports the batcher and ONNX Runtime: types stay light
    from service.explain import ExplainOutcome
    from service.serving import ServedVersion


@dataclass(frozen=True)
class FeatureBatch:
    """Validated inputs, one column per feature in graph order.

    Numeric columns are float32 [N, 1] (NaN = missing); categorical columns are object [N, 1]
    of str ("" = missing, which the graph sends to the unknown bucket).
    """

    columns: dict[str, NDArray[np.generic]]
    rows: int
    #: When the codec decoded every numeric feature as one block: their names and that block,
    #: float32 [F, N], whose rows the numeric ``columns`` are views of. The prediction log
    #: serialises it in one call instead of one column at a time (the native codec sets it).
    numeric_names: tuple[str, ...] = ()
    numeric_block: NDArray[np.float32] | None = None


@dataclass(frozen=True)
class ModelHandle:
    """One loaded, verified model version; requests keep the handle they resolved."""

    name: str
    version: int
    manifest: Manifest
    provider: str  # e.g. "CPUExecutionProvider" or "CUDAExecutionProvider"
    #: The version's session, batcher and precomputed arrays. Holding the handle keeps them
    #: alive, which is how a request finishes on the version it resolved after a swap. None
    #: only for handles built by hand (tests of the HTTP layer); infer() refuses those.
    runtime: ServedVersion | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Uncertainty:
    """What a prediction derives from member probabilities at one level; arrays are [N, ...]."""

    probabilities: NDArray[np.float64]  # [N, C]
    lower: NDArray[np.float64]  # [N, C]
    upper: NDArray[np.float64]  # [N, C]
    prediction_sets: NDArray[np.bool_]  # [N, C]
    label_index: NDArray[np.intp]  # [N], the most probable class's index
    labels: NDArray[np.object_]  # [N], that class's label
    #: Which conformal scores the sets came from: 0 the bundle's, else the adapted revision.
    conformal_revision: int = 0

    def take_rows(self, start: int, stop: int) -> Uncertainty:
        """Rows ``start:stop`` as views (one request's share of a batch)."""
        return Uncertainty(
            self.probabilities[start:stop],
            self.lower[start:stop],
            self.upper[start:stop],
            self.prediction_sets[start:stop],
            self.label_index[start:stop],
            self.labels[start:stop],
            self.conformal_revision,
        )


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """What every codec decodes a request into, whatever the protocol."""

    batch: FeatureBatch
    confidence_level: float
    #: The id the body carried (V2 ``id``), None when it carried none.
    request_id: str | None = None
    #: (output name, send as binary) in response order; empty: the protocol's default.
    outputs: tuple[tuple[str, bool], ...] = ()
    #: Per-instance context attributes (never model inputs): name -> object [N] of str.
    context: dict[str, NDArray[np.object_]] | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    """One request's answer as the pipeline computed it: what encoders, metrics and the log read."""

    handle: ModelHandle
    request: InferenceRequest
    uncertainty: Uncertainty
    request_id: str
    protocol: str  # "v1", "v2" or "grpc"
    queue_wait_s: float
    inference_s: float
    served_at: float  # unix seconds
    latency_s: float  # from the request's start to its answer being computed


@dataclass(frozen=True, slots=True)
class Explanation:
    """One explain request's answer as the pipeline computed it: one explanation per row."""

    handle: ModelHandle
    request: InferenceRequest
    outcome: ExplainOutcome
    method: str  # "exact" or "permutation(n=...)"
    request_id: str


@dataclass(frozen=True)
class FeatureInfo:
    """One model input as metadata endpoints show it."""

    name: str
    kind: Literal["numeric", "categorical"]
    datatype: Literal["FP32", "BYTES"]  # the V2 tensor type
    categories: list[str] | None = None  # known categories; anything else is "unknown"


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one served model version (plain types: orjson serialises it as is)."""

    name: str
    version: int
    versions: list[int]  # every served version, ascending
    state: str  # "READY"
    provider: str
    target: str
    features: list[FeatureInfo]
    classes: list[str]
    members: int
    metrics: dict[str, float]
    created_at: str  # ISO 8601
    data_fingerprint: str
    #: Where the conformal sets come from now (ServedVersion.conformal_state).
    conformal: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSummary:
    """One model in the list endpoint: served versions, or why none serves."""

    name: str
    versions: list[int]
    default_version: int | None
    state: str  # "READY" or "UNAVAILABLE"
    reason: str = ""


class ModelState(StrEnum):
    """Triton's repository-index states."""

    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class IndexEntry:
    """One row of the repository index (Triton's ``POST /v2/repository/index`` shape)."""

    name: str
    version: int | None
    state: ModelState
    reason: str = ""

    def as_triton(self) -> dict[str, str]:
        """The JSON object Triton returns for this row (versions are strings there)."""
        row = {"name": self.name, "state": self.state.value, "reason": self.reason}
        if self.version is not None:
            row["version"] = str(self.version)
        return row
