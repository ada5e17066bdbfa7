"""The naive baseline: a minimal FastAPI endpoint, pydantic body, synchronous ORT call.

This is what most teams write first; `probserve bench` reports our figures as ratios to it.
Run with ``uvicorn --factory bench.harness.naive_app:create_app`` and
``PROBSERVE_BENCH_BUNDLE=<bundle dir>`` (``PROBSERVE_BENCH_PROVIDERS=cuda``: on a GPU).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

from service.bundle import MODEL_FILE, graph_columns, read_manifest
from service.runtime.providers import resolve_providers, session_provider_arguments


class PredictRequest(BaseModel):
    """Records in, as in the native API."""

    instances: list[dict[str, float | str | None]]


class PredictResponse(BaseModel):
    """Mean probability per class, per instance."""

    predictions: list[dict[str, float]]


def create_app() -> FastAPI:
    """Build the baseline app for the bundle named by ``PROBSERVE_BENCH_BUNDLE``."""
    bundle = Path(os.environ["PROBSERVE_BENCH_BUNDLE"])
    manifest = read_manifest(bundle)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    providers = resolve_providers(os.environ.get("PROBSERVE_BENCH_PROVIDERS", "cpu"))
    session = ort.InferenceSession(
        str(bundle / MODEL_FILE), options, **session_provider_arguments(providers)
    )
    app = FastAPI()

    @app.post("/predict")
    def predict(request: PredictRequest) -> PredictResponse:
        values = {f: [row.get(f) for row in request.instances] for f in manifest.feature_names}
        probs = session.run(None, graph_columns(manifest.features, values))[0].mean(axis=1)
        return PredictResponse(
            predictions=[dict(zip(manifest.classes, map(float, p), strict=True)) for p in probs]
        )

    return app
