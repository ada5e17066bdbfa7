"""The protocol-agnostic data plane: resolve a model, run a validated batch, derive uncertainty.

HTTP adapters (native v1, KServe V2) decode their payloads into a :class:`FeatureBatch` with the
codecs, call :meth:`DataPlane.infer` and encode the :class:`PredictionResult`. Nothing here knows
about HTTP. Every successful prediction is reported to telemetry (metrics, prediction log).

The request path is kept lean on purpose (the service must beat a naive FastAPI endpoint by 2x):
per request it allocates the result arrays and little else, with no pydantic and no logging.
"""

from __future__ import annotations

import logging
import time

from service.bundle import NumericFeature
from service.errors import InvalidInput, ModelNotReady
from service.readiness import Readiness
from service.registry import ModelRegistry
from service.telemetry.events import PredictionServed, Telemetry
from service.types import (
    FeatureBatch,
    FeatureInfo,
    IndexEntry,
    ModelHandle,
    ModelInfo,
    ModelSummary,
    PredictionResult,
)
from service.uncertainty.levels import MAX_CONFIDENCE_LEVEL, MIN_CONFIDENCE_LEVEL

logger = logging.getLogger(__name__)


class DataPlane:
    """Resolve models, run batches through the runtime, derive uncertainty, report predictions."""

    def __init__(self, registry: ModelRegistry, telemetry: Telemetry | None = None) -> None:
        """``telemetry`` hears of every successful prediction."""
        self.registry = registry
        self.telemetry = telemetry if telemetry is not None else Telemetry()

    # -- lifespan ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the models (in worker threads) and start the repository poller."""
        await self.registry.start()

    async def stop(self) -> None:
        """Stop polling and drain every batcher; requests in flight finish."""
        await self.registry.stop()

    def ready(self, mode: Readiness = "all") -> bool:
        """Ready under ``mode``: every model in the repository serves ('all'), or one ('any')."""
        return self.registry.ready(mode)

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
        protocol: str = "",
        started: float | None = None,
    ) -> PredictionResult:
        """Probabilities, intervals, prediction sets and labels for every row of ``batch``.

        ``started`` (``time.perf_counter()`` when the request arrived) dates the latency the
        prediction log records; without it, the latency counts from this call.
        """
        if started is None:
            started = time.perf_counter()
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
            derived.conformal_revision,
        )
        served = PredictionServed(
            batch, result, request_id, protocol, time.time(), time.perf_counter() - started
        )
        try:
            self.telemetry.prediction_served(served)
        except Exception:  # metrics or logging trouble must not fail a computed answer
            logger.exception("telemetry failed to record a prediction")
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
            conformal=(
                handle.runtime.conformal_state() if handle.runtime is not None else {"revision": 0}
            ),
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
