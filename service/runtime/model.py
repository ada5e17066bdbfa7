"""A loaded, verified bundle: the ONNX Runtime session and its manifest."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.capi.onnxruntime_pybind11_state import EPFail

from service.bundle import MODEL_FILE, Manifest, graph_columns
from service.runtime.providers import (
    CUDA,
    ExecutionProviders,
    resolve_providers,
    session_options,
    session_provider_arguments,
)
from service.runtime.verify import (
    check_sample,
    check_self_contained,
    check_signature,
    load_error,
    verified_manifest,
    verified_model_bytes,
)

logger = logging.getLogger(__name__)

Columns = Mapping[str, NDArray[np.generic]]


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One bundle version ready to run; :meth:`run` is synchronous and thread-safe."""

    name: str
    version: int
    path: Path
    manifest: Manifest
    session: ort.InferenceSession
    provider: str
    output_names: list[str]  # [manifest.output], built once rather than on every run

    def run(self, columns: Columns) -> NDArray[np.float32]:
        """Member probabilities [N, K, C] for graph input columns (feature name -> [N, 1])."""
        # The dict is handed to onnxruntime as is: it looks inputs up by name, so extra keys
        # would be an error there and the codecs guarantee exactly the features. The binding
        # is called directly: InferenceSession.run first walks every graph input in Python to
        # name missing ones (21 us of a 130 us batch-1 run for the 30-input demo model), and
        # the binding checks names, types and shapes itself. An execution-provider failure
        # goes through InferenceSession.run, which owns the fallback to the next provider.
        try:
            out: NDArray[np.float32] = self.session._sess.run(self.output_names, columns, None)[0]
        except EPFail:
            out = self.session.run(self.output_names, columns)[0]
        return out


def load_model(
    bundle: Path,
    *,
    name: str | None = None,
    version: int | None = None,
    providers: ExecutionProviders | None = None,
    intra_op_threads: int = 1,
) -> LoadedModel:
    """Load and verify the bundle in ``bundle``; raise ModelLoadError naming the failed check.

    Checks, in order: manifest schema (and that it names the model directory), sha256 of
    model.onnx, that no tensor keeps its data in an external file, that a session can be
    created, the graph's inputs and output against the manifest, and that the stored sample
    rows reproduce the stored outputs. A warm-up run
    follows, so the first real request does not pay for lazy allocations. Blocking: call it in a
    worker thread.
    """
    started = time.perf_counter()
    name = name if name is not None else bundle.parent.name
    version = version if version is not None else int(bundle.name)
    manifest = verified_manifest(bundle, expected_name=name)
    data = verified_model_bytes(bundle, bundle / MODEL_FILE, manifest)
    check_self_contained(bundle, bundle / MODEL_FILE, data)
    providers = providers if providers is not None else resolve_providers("cpu")
    try:
        session = ort.InferenceSession(
            data,
            session_options(intra_op_threads=intra_op_threads),
            **session_provider_arguments(providers),
        )
    except Exception as exc:  # onnxruntime raises its own pybind error types for bad graphs
        raise load_error(bundle, "onnx", f"onnxruntime cannot load {MODEL_FILE}: {exc}") from exc
    actual = session.get_providers()[0]
    if actual != providers.primary:
        if providers.explicit:
            raise load_error(
                bundle,
                "provider",
                f"{providers.primary} was requested but onnxruntime created the session on "
                f"{actual}",
            )
        # auto: CUDA passed the probe yet this session fell back; serve, but say so loudly.
        logger.warning("model %s:%s runs on %s instead of %s", name, version, actual, CUDA)
    check_signature(bundle, manifest, session.get_inputs(), session.get_outputs())
    outputs = [manifest.output]
    model = LoadedModel(name, version, bundle, manifest, session, actual, outputs)
    sample = graph_columns(manifest.features, manifest.sample.inputs)
    try:
        produced = model.run(sample)
    except Exception as exc:
        raise load_error(bundle, "sample", f"running the stored sample rows failed: {exc}") from exc
    check_sample(bundle, manifest, produced)
    try:
        _warm_up(model, sample)
    except Exception as exc:
        raise load_error(bundle, "warm-up", f"the warm-up run failed: {exc}") from exc
    elapsed = time.perf_counter() - started
    logger.info(
        "loaded model %s version %s from %s on %s in %.3fs", name, version, bundle, actual, elapsed
    )
    return model


def _warm_up(model: LoadedModel, sample: dict[str, NDArray[np.generic]]) -> None:
    # The first run at a new batch size allocates buffers (and on CUDA picks kernels); run a
    # single row and a typical batch now instead of inside the first requests.
    one_row = {k: v[:1] for k, v in sample.items()}
    model.run(one_row)
    rows = len(next(iter(sample.values())))
    repeat = max(1, 64 // max(rows, 1))
    model.run({k: np.concatenate([v] * repeat) for k, v in sample.items()})
