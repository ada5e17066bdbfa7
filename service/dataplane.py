"""The protocol-agnostic data plane: resolve a model, run a validated batch, derive uncertainty.

HTTP adapters (native v1, KServe V2) decode their payloads into a :class:`FeatureBatch` with the
codecs, call :meth:`DataPlane.infer` and encode the :class:`PredictionResult`. Nothing here knows
about HTTP. Metrics and the prediction log hook in through :class:`PredictionObserver`.

The request path is kept lean on purpose (the service must beat a naive FastAPI endpoint by 2x):
per request it allocates the result arrays and little else, with no pydantic and no logging.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from service.bundle import Manifest, NumericFeature
from service.errors import InvalidInput, ModelNotReady
from service.runtime.serving import ServedVersion

if TYPE_CHECKING:  # the registry imports ModelHandle from here
    from service.registry import IndexEntry, ModelRegistry

logger = logging.getLogger(__name__)

#: Confidence levels a request may ask for (DESIGN.md).
MIN_CONFIDENCE_LEVEL = 0.5
MAX_CONFIDENCE_LEVEL = 0.999


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


class PredictionObserver(Protocol):
    """Hook for metrics and the prediction log; called after every successful inference."""

    def on_prediction(
        self, batch: FeatureBatch, result: PredictionResult, request_id: str, endpoint: str
    ) -> None:
        """Record one request's predictions; must not block (queue work, do not do I/O)."""


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


@dataclass(frozen=True)
class ModelSummary:
    """One model in the list endpoint: served versions, or why none serves."""

    name: str
    versions: list[int]
    default_version: int | None
    state: str  # "READY" or "UNAVAILABLE"
    reason: str = ""


class DataPlane:
    """Resolve models, run batches through the runtime, derive uncertainty, notify observers."""

    def __init__(
        self, registry: ModelRegistry, observers: Sequence[PredictionObserver] = ()
    ) -> None:
        """``observers`` are called after every successful inference, in order."""
        self.registry = registry
        self._observers: list[PredictionObserver] = list(observers)

    def add_observer(self, observer: PredictionObserver) -> None:
        """Register one more observer (metrics, prediction log)."""
        self._observers.append(observer)

    # -- lifespan ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the models (in worker threads) and start the repository poller."""
        await self.registry.start()

    async def stop(self) -> None:
        """Stop polling and drain every batcher; requests in flight finish."""
        await self.registry.stop()

    def ready(self) -> bool:
        """True when every model in the repository has a loaded version."""
        return self.registry.ready()

    # -- inference -----------------------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None) -> ModelHandle:
        """The handle to infer with; ModelNotFound or ModelNotReady otherwise."""
        return self.registry.resolve(name, version)

    def model_ready(self, name: str, version: int | None = None) -> bool:
        """Whether ``name`` (at ``version``) can serve now (V2 model-ready endpoint)."""
        try:
            self.registry.resolve(name, version)
        except ModelNotReady:
            return False
        return True  # ModelNotFound propagates: the endpoint answers 404 for unknown models

    async def infer(
        self,
        handle: ModelHandle,
        batch: FeatureBatch,
        confidence_level: float,
        *,
        request_id: str = "",
        endpoint: str = "",
    ) -> PredictionResult:
        """Probabilities, intervals, prediction sets and labels for every row of ``batch``."""
        runtime = handle.runtime
        if runtime is None:
            raise ModelNotReady(
                f"model {handle.name!r} version {handle.version} has no runtime", model=handle.name
            )
        if not MIN_CONFIDENCE_LEVEL <= confidence_level <= MAX_CONFIDENCE_LEVEL:
            raise InvalidInput(
                f"confidence_level must be in [{MIN_CONFIDENCE_LEVEL}, {MAX_CONFIDENCE_LEVEL}], "
                f"got {confidence_level}",
                field="confidence_level",
            )
        out = await runtime.batcher.submit_timed(batch, confidence_level)
        derived = out.derived
        assert derived is not None  # the registry builds every batcher with derive
        result = PredictionResult(
            handle,
            confidence_level,
            derived.probabilities,
            derived.lower,
            derived.upper,
            derived.prediction_sets,
            derived.labels.tolist(),
            {"queue_wait": out.queue_wait_seconds, "inference": out.inference_seconds},
        )
        for observer in self._observers:
            try:
                observer.on_prediction(batch, result, request_id, endpoint)
            except Exception:  # metrics or logging trouble must not fail a computed answer
                logger.exception("prediction observer %r failed", observer)
        return result

    # -- metadata and model control ------------------------------------------------------------

    def list_models(self) -> list[ModelSummary]:
        """Every model in the repository with its served versions or the reason none serves."""
        summaries: list[ModelSummary] = []
        index = self.registry.index()
        for name in self.registry.model_names():
            versions = self.registry.served_versions(name)
            if versions:
                summaries.append(ModelSummary(name, versions, versions[-1], "READY"))
                continue
            reasons = "; ".join(
                e.reason for e in index if e.name == name and e.reason and e.state != "READY"
            )
            summaries.append(ModelSummary(name, [], None, "UNAVAILABLE", reasons))
        return summaries

    def model_info(self, name: str, version: int | None = None) -> ModelInfo:
        """Metadata of ``name`` at ``version`` (default: newest served); errors as resolve()."""
        handle = self.registry.resolve(name, version)
        manifest = handle.manifest
        features = [
            FeatureInfo(f.name, "numeric", "FP32")
            if isinstance(f, NumericFeature)
            else FeatureInfo(f.name, "categorical", "BYTES", list(f.categories))
            for f in manifest.features
        ]
        return ModelInfo(
            name=handle.name,
            version=handle.version,
            versions=self.registry.served_versions(name),
            state="READY",
            provider=handle.provider,
            target=manifest.target,
            features=features,
            classes=list(manifest.classes),
            members=manifest.members,
            metrics=dict(manifest.metrics),
            created_at=manifest.created_at.isoformat(),
            data_fingerprint=manifest.data_fingerprint,
        )

    def index(self) -> list[IndexEntry]:
        """Triton repository index rows (``entry.as_triton()`` gives the JSON object)."""
        return self.registry.index()

    async def load(self, name: str) -> None:
        """Load or reload ``name`` now (Triton load); ModelNotFound / ModelLoadError."""
        await self.registry.load(name)

    async def unload(self, name: str) -> None:
        """Unload every version of ``name`` (Triton unload); ModelNotFound."""
        await self.registry.unload(name)
