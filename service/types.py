"""Value types every layer shares: the registry, the data plane, the codecs and telemetry.

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
    #: The conformal scores the sets came from: 0 the bundle's, else the adapted revision.
    conformal_revision: int = 0


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
