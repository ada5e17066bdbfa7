"""Request bodies for the benchmark: the model's own working examples, at a given row count."""

from __future__ import annotations

import orjson

from bench.harness.grpc_load import infer_request
from service.bundle import Manifest
from service.codecs.examples import infer_example, predict_example


def native_body(manifest: Manifest, rows: int) -> bytes:
    """A native ``/v1/models/{name}/predict`` body with ``rows`` instances."""
    return orjson.dumps(predict_example(manifest, rows, level=0.95))


def v2_body(manifest: Manifest, rows: int) -> bytes:
    """A KServe V2 ``/v2/models/{name}/infer`` body: one [rows] tensor per feature."""
    return orjson.dumps(infer_example(manifest, rows, level=0.95))


def grpc_body(manifest: Manifest, rows: int, model: str) -> bytes:
    """The V2 body's twin as a serialized gRPC ``ModelInferRequest`` (raw tensor contents)."""
    return infer_request(infer_example(manifest, rows, level=0.95), model)
