"""Request bodies that work against a given model, built from its manifest's sample rows.

Used for the OpenAPI examples, the ``example`` in native model metadata and the benchmark, so a
user can copy one and get an answer.
"""

from __future__ import annotations

from itertools import cycle, islice
from typing import Any

from service.bundle import Manifest, NumericFeature


def example_rows(manifest: Manifest, rows: int = 1) -> list[dict[str, Any]]:
    """``rows`` instances (feature -> raw value), cycling through the sample rows.

    Rows without missing values come first, so a one-row example shows real values.
    """
    inputs = manifest.sample.inputs
    names = manifest.feature_names
    n = len(inputs[names[0]])
    records = [{name: inputs[name][i] for name in names} for i in range(n)]
    records.sort(key=lambda r: sum(v is None for v in r.values()))
    return list(islice(cycle(records), rows))


def predict_example(manifest: Manifest, rows: int = 1, level: float = 0.9) -> dict[str, Any]:
    """A native ``/v1/models/{name}/predict`` request body."""
    return {"instances": example_rows(manifest, rows), "confidence_level": level}


def infer_example(manifest: Manifest, rows: int = 1, level: float = 0.9) -> dict[str, Any]:
    """A KServe V2 ``/v2/models/{name}/infer`` request body: one [rows] tensor per feature.

    A missing numeric is sent as the feature's training mean (what the graph imputes), because
    strict JSON has no NaN; a missing categorical is sent as "" (the unknown bucket).
    """
    records = example_rows(manifest, rows)
    inputs = []
    for f in manifest.features:
        values = [r[f.name] for r in records]
        if isinstance(f, NumericFeature):
            data: list[Any] = [f.mean if v is None else float(v) for v in values]
            datatype = "FP32"
        else:
            data = ["" if v is None else str(v) for v in values]
            datatype = "BYTES"
        inputs.append({"name": f.name, "shape": [rows], "datatype": datatype, "data": data})
    return {"id": "example-1", "inputs": inputs, "parameters": {"confidence_level": level}}
