"""Model metadata as the endpoints show it, read from the registry."""

from __future__ import annotations

from service.bundle import NumericFeature
from service.errors import ModelNotReady
from service.registry import ModelRegistry
from service.types import FeatureInfo, ModelInfo, ModelSummary


def list_models(registry: ModelRegistry) -> list[ModelSummary]:
    """Every model in the repository with its served versions or the reason none serves."""
    summaries: list[ModelSummary] = []
    index = registry.index()
    for name in registry.model_names():
        versions = registry.served_versions(name)
        if versions:
            summaries.append(ModelSummary(name, versions, versions[-1], "READY"))
            continue
        reasons = "; ".join(
            e.reason for e in index if e.name == name and e.reason and e.state != "READY"
        )
        summaries.append(ModelSummary(name, [], None, "UNAVAILABLE", reasons))
    return summaries


def model_info(registry: ModelRegistry, name: str, version: int | None = None) -> ModelInfo:
    """Metadata of ``name`` at ``version`` (default: newest served); errors as resolve()."""
    handle = registry.resolve(name, version)
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
        versions=registry.served_versions(name),
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


def model_ready(registry: ModelRegistry, name: str, version: int | None = None) -> bool:
    """Whether ``name`` (at ``version``) can serve now; ModelNotFound for unknown models."""
    try:
        registry.resolve(name, version)
    except ModelNotReady:
        return False
    return True
