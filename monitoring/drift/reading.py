"""Read the inputs of one drift run: the bundle (manifest, reference data) and a log window."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from service.bundle import (
    REFERENCE_FILE,
    CategoricalFeature,
    Manifest,
    ManifestError,
    bundle_path,
    model_names,
    model_versions,
    read_manifest,
)
from service.errors import UsageError


@dataclass(frozen=True)
class Baseline:
    """One bundle version's manifest and reference data."""

    manifest: Manifest
    version: int
    reference: pd.DataFrame
    warnings: list[str]


def read_baseline(repository: Path, model: str, version: int | None) -> Baseline:
    """The manifest and reference.parquet of ``model`` (latest version unless ``version``).

    :class:`UsageError` (one line, no path) for an unknown model or version or a broken bundle.
    """
    versions = model_versions(repository, model)
    if not versions:
        known = ", ".join(model_names(repository)) or "none"
        raise UsageError(f"unknown model {model!r} in the model repository (models: {known})")
    if version is not None and version not in versions:
        raise UsageError(
            f"model {model!r} has no version {version} (versions: {', '.join(map(str, versions))})"
        )
    chosen = version if version is not None else versions[-1]
    directory = bundle_path(repository, model, chosen)
    try:
        manifest = read_manifest(directory)
        reference = pd.read_parquet(directory / REFERENCE_FILE)
    except (ManifestError, OSError, ValueError) as exc:
        raise UsageError(
            f"bundle {model} version {chosen} cannot be read: {type(exc).__name__}"
        ) from exc
    notes = []
    if not manifest.reference_outputs_held_out:
        notes.append(
            f"bundle schema {manifest.schema_version} computes the reference's model outputs on "
            "training rows, which look more certain than new rows: output columns may show "
            "drift on honest traffic (retrain to get a held-out reference)"
        )
    return Baseline(manifest, chosen, reference, notes)


def window_start(since_seconds: float | None, now: float | None = None) -> float | None:
    """Unix time ``since_seconds`` ago, or None."""
    if since_seconds is None:
        return None
    return (time.time() if now is None else now) - since_seconds


def read_current(
    url: str,
    manifest: Manifest,
    *,
    version: int | None,
    since_seconds: float | None,
    last: int | None,
) -> pd.DataFrame:
    """The window of the prediction log for one model, through service.predlog's reader."""
    try:
        from service.predlog.reader import read_window
    except ImportError as exc:  # the reader ships with the prediction log
        raise UsageError(
            "this installation has no prediction-log reader (service.predlog)"
        ) from exc
    feature_types: dict[str, Literal["numeric", "categorical"]] = {
        f.name: ("categorical" if isinstance(f, CategoricalFeature) else "numeric")
        for f in manifest.features
    }
    try:
        return read_window(
            url,
            manifest.name,
            version=version,
            since=window_start(since_seconds),
            last=last,
            feature_types=feature_types,
            compact=True,
        )
    except ValueError as exc:
        raise UsageError(f"cannot read the prediction log: {exc}") from exc
