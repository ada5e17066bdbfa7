"""Request bodies for the benchmark, built from a bundle's own verification sample rows."""

from __future__ import annotations

from itertools import cycle, islice
from typing import Any

import orjson

from service.bundle import Manifest, NumericFeature


def sample_rows(manifest: Manifest, rows: int) -> list[dict[str, Any]]:
    """``rows`` instances (feature -> raw value) cycling through the manifest's sample rows."""
    inputs = manifest.sample.inputs
    n = len(next(iter(inputs.values())))
    records = [{name: inputs[name][i] for name in manifest.feature_names} for i in range(n)]
    return list(islice(cycle(records), rows))


def native_body(manifest: Manifest, rows: int) -> bytes:
    """A native ``/v1/models/{name}/predict`` body with ``rows`` instances."""
    return orjson.dumps({"instances": sample_rows(manifest, rows)})


def v2_body(manifest: Manifest, rows: int) -> bytes:
    """A KServe V2 ``/v2/models/{name}/infer`` body: one [rows, 1] tensor per feature."""
    records = sample_rows(manifest, rows)
    inputs = []
    for f in manifest.features:
        values = [r[f.name] for r in records]
        if isinstance(f, NumericFeature):
            data: list[Any] = [float("nan") if v is None else float(v) for v in values]
            datatype = "FP32"
        else:
            data = ["" if v is None else str(v) for v in values]
            datatype = "BYTES"
        inputs.append({"name": f.name, "shape": [rows, 1], "datatype": datatype, "data": data})
    # V2 JSON carries NaN for a missing FP32 value; orjson writes NaN as null, so spell it out.
    return orjson.dumps({"inputs": inputs}).replace(b"null", b"NaN")
