"""The HTTP floor with one numpy conversion per feature kind: bare_app.py, but the codec builds
one float32 array of all numeric features and one string array of all categoricals per request.

Standalone like bare_app.py (onnxruntime, numpy and orjson only), whose HTTP side it reuses.
Given the packed graph that ``bench/packed_input.py --output FILE`` writes (it names its packed
columns in its model metadata), it feeds the two arrays as they are ([N, F] and [N, G]); given
a bundle's per-feature graph, it feeds one [N, 1] view per feature of the same arrays (what
probserve's codec does), so the two graphs are compared behind the same codec. Run with
``uvicorn --app-dir bench/apps --factory bare_packed_app:create_app`` and
``PROBSERVE_BENCH_ONNX=<model.onnx>``. Body and answer as in bare_app.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import onnxruntime as ort

# bench/apps is on the path (uvicorn --app-dir, or bench/packed_input.py): the same HTTP floor.
from bare_app import App, predictions_app

#: Model metadata keys written by bench/packed_input.py: feature names in packed column order.
NUMERIC_COLUMNS_KEY = "probserve.packed.numeric"
CATEGORICAL_COLUMNS_KEY = "probserve.packed.categorical"


def packed_feeds(
    names: list[str], numeric: list[str], categorical: list[str], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The packed graph's inputs (``names``, numeric first): float32 [N, F] (None -> NaN) and
    object [N, G] (None -> ""), built straight from the rows with no per-feature arrays."""
    # One flat list then a reshape: numpy converts a flat list faster than nested ones.
    feeds: dict[str, Any] = {}
    inputs = iter(names)
    if numeric:
        values = [np.nan if (v := r.get(n)) is None else v for r in rows for n in numeric]
        feeds[next(inputs)] = np.array(values, dtype=np.float32).reshape(len(rows), len(numeric))
    if categorical:
        texts = ["" if (v := r.get(n)) is None else str(v) for r in rows for n in categorical]
        feeds[next(inputs)] = np.array(texts, dtype=object).reshape(len(rows), len(categorical))
    return feeds


def column_views(
    numeric: list[str], categorical: list[str], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """A per-feature graph's inputs as [N, 1] views of one [F, N] and one [G, N] array."""
    feeds: dict[str, Any] = {}
    n = len(rows)
    if numeric:
        values = [np.nan if (v := r.get(f)) is None else v for f in numeric for r in rows]
        wide = np.array(values, dtype=np.float32).reshape(len(numeric), n)
        feeds.update((f, wide[j][:, None]) for j, f in enumerate(numeric))
    if categorical:
        texts = ["" if (v := r.get(f)) is None else str(v) for f in categorical for r in rows]
        table = np.array(texts, dtype=object).reshape(len(categorical), n)
        feeds.update((f, table[j][:, None]) for j, f in enumerate(categorical))
    return feeds


def create_app() -> App:
    """The app for the (packed or per-feature) ONNX file named by ``PROBSERVE_BENCH_ONNX``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        os.environ["PROBSERVE_BENCH_ONNX"], options, providers=["CPUExecutionProvider"]
    )
    meta = session.get_modelmeta().custom_metadata_map
    names = [i.name for i in session.get_inputs()]
    to_feeds: Callable[[list[dict[str, Any]]], dict[str, Any]]
    if NUMERIC_COLUMNS_KEY in meta:  # a packed graph
        numeric: list[str] = json.loads(meta[NUMERIC_COLUMNS_KEY])
        categorical: list[str] = json.loads(meta[CATEGORICAL_COLUMNS_KEY])
        to_feeds = partial(packed_feeds, names, numeric, categorical)
    else:  # one input per feature
        numeric = [i.name for i in session.get_inputs() if i.type == "tensor(float)"]
        categorical = [i.name for i in session.get_inputs() if i.type != "tensor(float)"]
        to_feeds = partial(column_views, numeric, categorical)
    first_output = [session.get_outputs()[0].name]
    return predictions_app(lambda rows: session.run(first_output, to_feeds(rows))[0].mean(axis=1))
