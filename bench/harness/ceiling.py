"""The ceiling: the bundle's graph called in-process with onnxruntime, no HTTP at all."""

from __future__ import annotations

import time
from pathlib import Path

import onnxruntime as ort

from service.bundle import MODEL_FILE, graph_columns, read_manifest
from service.codecs.examples import example_rows
from service.runtime.providers import resolve_providers, session_provider_arguments


def ceiling_rows_per_s(
    bundle: Path, batch: int, seconds: float = 1.0, providers: str = "cpu"
) -> float:
    """Rows per second of ``InferenceSession.run`` at ``batch`` rows, one intra-op thread.

    On CUDA each call includes the copies to and from the device, as a served request pays them.
    """
    manifest = read_manifest(bundle)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(bundle / MODEL_FILE),
        options,
        **session_provider_arguments(resolve_providers(providers)),
    )
    rows = example_rows(manifest, batch)
    columns = graph_columns(manifest.features, {f: [r[f] for r in rows] for f in rows[0]})
    for _ in range(20):
        session.run(None, columns)
    calls = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            session.run(None, columns)
        calls += 50
    return calls * batch / elapsed
