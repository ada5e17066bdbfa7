"""Write a model bundle: graph, manifest, reference sample and report, published atomically."""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import pandas as pd
from numpy.typing import NDArray

from service.bundle import (
    MODEL_FILE,
    REFERENCE_FILE,
    REPORT_DIR,
    Calibration,
    Feature,
    Manifest,
    SensitiveColumn,
    VerificationSample,
    graph_columns,
    staged_bundle,
    write_manifest,
)
from service.bundle.manifest import FeatureValue, file_sha256
from training.onnx_graph import EnsembleWeights, build_ensemble_graph

#: The reference sample is the drift baseline; docs/architecture.md caps it at 50k rows.
MAX_REFERENCE_ROWS = 50_000

_LIBRARIES = ("probserve", "torch", "onnx", "onnxruntime", "numpy", "scikit-learn", "pandas")

ReportWriter = Callable[[Path, Manifest], None]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the bundle, for the manifest."""
    found = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def run_graph(
    model_bytes: bytes, columns: Mapping[str, NDArray[np.generic]]
) -> NDArray[np.float32]:
    """Run serialised graph bytes on CPU and return member probabilities [N, K, C]."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    out = session.run(None, dict(columns))[0]
    return np.asarray(out, dtype=np.float32)


def write_bundle(
    repository: Path,
    name: str,
    *,
    features: Sequence[Feature],
    classes: Sequence[str],
    target: str,
    weights: EnsembleWeights,
    conformal_scores: NDArray[np.floating],
    metrics: Mapping[str, float],
    training_params: Mapping[str, Any],
    data_fingerprint: str,
    reference: pd.DataFrame,
    sample_inputs: Mapping[str, Sequence[FeatureValue]],
    write_report: ReportWriter | None = None,
    temperature_objective: Literal["member", "ensemble_mean"] = "ensemble_mean",
    sensitive: Sequence[SensitiveColumn] = (),
) -> Path:
    """Write and publish ``<repository>/<name>/<next version>``; return its path.

    ``sample_inputs`` are a few raw rows, column-wise; their outputs are computed here with
    onnxruntime and stored so every later load can check that the graph still reproduces them.
    ``temperature_objective`` records what the temperatures in ``weights`` were fitted for;
    ``sensitive`` the columns fairness figures are sliced by.
    Nothing is left in the repository if any step fails.
    """
    model = build_ensemble_graph(features, weights)
    model_bytes = model.SerializeToString()
    sample = {k: list(v) for k, v in sample_inputs.items()}
    sample_outputs = run_graph(model_bytes, graph_columns(features, sample))
    with staged_bundle(repository, name) as staged:
        model_path = staged.path / MODEL_FILE
        model_path.write_bytes(model_bytes)
        manifest = Manifest(
            name=name,
            created_at=datetime.now(UTC),
            target=target,
            features=list(features),
            classes=list(classes),
            members=weights.members,
            calibration=Calibration(
                temperatures=[float(t) for t in weights.temperatures],
                temperature_objective=temperature_objective,
                conformal_scores=[float(s) for s in np.sort(conformal_scores)],
            ),
            metrics={k: float(v) for k, v in metrics.items()},
            training={k: _scalar(v) for k, v in training_params.items()},
            model_sha256=file_sha256(model_path),
            data_fingerprint=data_fingerprint,
            library_versions=library_versions(),
            sample=VerificationSample(inputs=sample, outputs=sample_outputs.tolist()),
            sensitive=list(sensitive),
        )
        write_manifest(staged.path, manifest)
        ref = reference
        if len(ref) > MAX_REFERENCE_ROWS:
            ref = ref.sample(n=MAX_REFERENCE_ROWS, random_state=0)
        ref.to_parquet(staged.path / REFERENCE_FILE, index=False)
        if write_report is not None:
            report_dir = staged.path / REPORT_DIR
            report_dir.mkdir()
            write_report(report_dir, manifest)
    assert staged.published is not None
    return staged.published


def _scalar(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
