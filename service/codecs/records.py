"""The native (v1) protocol codec: ``{"instances": [{feature: value}]}`` in, predictions out.

Request body::

    {"instances": [{"age": 41, "city": "Lyon"}, ...], "confidence_level": 0.95}

Response body (TF Serving / KServe V1 shape, one prediction per instance, in order)::

    {"predictions": [{"label": "yes", "probabilities": {"no": 0.2, "yes": 0.8},
                      "intervals": {"no": [0.1, 0.3], "yes": [0.7, 0.9]},
                      "prediction_set": ["yes"]}, ...],
     "model": "demo", "version": 3, "confidence_level": 0.95, "request_id": "..."}

Every instance must carry every feature (``null`` is a missing value, an absent key is an error)
and nothing else; the value rules are in :mod:`service.codecs.columns`.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import compress
from operator import itemgetter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.bundle import CategoricalFeature, Manifest
from service.codecs.columns import (
    ONLY_DICT,
    categorical_column,
    confidence_level,
    describe,
    load_json,
    numeric_block,
    numeric_rows,
)
from service.codecs.context import context_names, instance_context
from service.codecs.numeric_body import parse_numeric_body
from service.errors import InvalidInput
from service.types import FeatureBatch, InferenceRequest, Prediction

REQUEST_KEYS = frozenset({"instances", "confidence_level"})


def decode_predict_body(
    body: bytes | memoryview, manifest: Manifest, *, max_rows: int, default_level: float
) -> InferenceRequest:
    """Parse and validate a native request body (:func:`decode_predict_request`'s rules).

    A model whose features are all numeric and that declares no context takes the one-pass
    parser first (:mod:`service.codecs.numeric_body`); any body it does not take, valid or not,
    goes through the general path, which alone words the errors.
    """
    numeric = manifest.numeric_feature_names
    if numeric and len(numeric) == len(manifest.features) and not context_names(manifest):
        fast = _numeric_body(body, tuple(numeric), max_rows, default_level)
        if fast is not None:
            return fast
    return decode_predict_request(
        load_json(body), manifest, max_rows=max_rows, default_level=default_level
    )


def _numeric_body(
    body: bytes | memoryview, numeric: tuple[str, ...], max_rows: int, default_level: float
) -> InferenceRequest | None:
    parsed = parse_numeric_body(body, numeric)
    if parsed is None:
        return None
    wide, level = parsed
    if len(wide) > max_rows:
        return None
    try:
        if level is not None:
            level = confidence_level(level, "confidence_level")
        block = numeric_block(wide, list(numeric))
    except InvalidInput:
        return None
    views = dict(zip(numeric, block[:, :, None], strict=True))
    batch = FeatureBatch(views, len(wide), numeric, block)
    return InferenceRequest(batch, default_level if level is None else level)


def decode_predict_request(
    payload: Any, manifest: Manifest, *, max_rows: int, default_level: float
) -> InferenceRequest:
    """Validate a parsed native request against the model's features.

    Raises :class:`InvalidInput` naming the instance, the feature and what was expected.
    """
    if type(payload) is not dict:
        raise InvalidInput(
            "the request body must be a JSON object with an 'instances' list, "
            f"got {describe(payload)}",
            expected="an object",
        )
    if len(payload) > 2 or not REQUEST_KEYS.issuperset(payload):
        unknown = sorted(set(payload) - REQUEST_KEYS)
        raise InvalidInput(
            f"unknown request field(s) {unknown}: expected 'instances' and optionally "
            "'confidence_level'",
            field=unknown[0],
        )
    level = default_level
    if "confidence_level" in payload:
        level = confidence_level(payload["confidence_level"], "confidence_level")
    instances = payload.get("instances")
    if type(instances) is not list:
        raise InvalidInput(
            "'instances' must be a list of objects keyed by feature name, "
            f"got {describe(instances)}",
            field="instances",
        )
    n = len(instances)
    if n == 0:
        raise InvalidInput("'instances' is empty: send at least one instance", field="instances")
    if n > max_rows:
        raise InvalidInput(
            f"'instances' has {n} rows, more than the limit of {max_rows} per request",
            field="instances",
            limit=max_rows,
        )
    names = manifest.feature_names
    width = len(names)
    # Shape checks in C (map/set) for the common case; the Python loops below run only to name
    # the first bad instance.
    if not ONLY_DICT.issuperset(map(type, instances)):
        i = next(i for i, inst in enumerate(instances) if type(inst) is not dict)
        raise InvalidInput(
            f"instance {i}: expected an object keyed by feature name, got {describe(instances[i])}",
            instance=i,
            expected="an object",
        )
    context = None
    declared = context_names(manifest)
    if declared:  # the context objects leave the instances: only features stay
        context = instance_context([inst.pop("context", None) for inst in instances], declared)
    if {width} != set(map(len, instances)):
        i = next(i for i, inst in enumerate(instances) if len(inst) != width)
        raise _key_mismatch(i, instances[i], names)
    numeric = manifest.numeric_feature_names
    try:
        # All numeric features in one numpy conversion (per-feature numpy calls dominate a
        # wide batch-1 request); itemgetter pulls a row's values in C.
        if len(numeric) > 1:
            getter = itemgetter(*numeric)
            numeric_values = numeric_rows(list(map(getter, instances)), numeric)
        elif numeric:
            only = numeric[0]
            numeric_values = numeric_rows([(inst[only],) for inst in instances], numeric)
        # [N, 1] views of the numeric block's rows, made in one pass (a view per feature by
        # indexing cost more than the model's own run for a wide batch-1 request).
        views: dict[str, NDArray[np.generic]] = (
            dict(zip(numeric, numeric_values[:, :, None], strict=True)) if numeric else {}
        )
        if len(numeric) == width:
            columns = views
        else:
            columns = {}
            for feature in manifest.features:  # graph input order
                name = feature.name
                if isinstance(feature, CategoricalFeature):
                    values = list(map(itemgetter(name), instances))
                    columns[name] = categorical_column(values, name, categories=feature.categories)
                else:
                    columns[name] = views[name]
    except KeyError as exc:
        missing = exc.args[0]
        i = next(i for i, inst in enumerate(instances) if missing not in inst)
        raise _key_mismatch(i, instances[i], names) from None
    if numeric:
        batch = FeatureBatch(columns, n, tuple(numeric), numeric_values)
        return InferenceRequest(batch, level, context=context)
    return InferenceRequest(FeatureBatch(columns=columns, rows=n), level, context=context)


def _key_mismatch(i: int, instance: dict[str, Any], names: list[str]) -> InvalidInput:
    """Name the missing and the unknown features of one instance (a typo shows as both)."""
    missing = [n for n in names if n not in instance]
    known = set(names)
    unknown = [k for k in instance if k not in known]
    parts = []
    if missing:
        parts.append(f"missing feature(s) {missing} (send null for a missing value)")
    if unknown:
        parts.append(f"unknown feature(s) {unknown}")
        if "context" in unknown:
            parts.append("this model declares no context attributes")
    feature = missing[0] if missing else unknown[0]
    return InvalidInput(
        f"instance {i}: " + "; ".join(parts) + f"; expected exactly the features {names}",
        instance=i,
        feature=feature,
        expected=f"the features {names}",
    )


def encode_predict_response(prediction: Prediction) -> dict[str, Any]:
    """The native response body (a dict ready for orjson)."""
    result = prediction.uncertainty
    handle = prediction.handle
    classes = handle.manifest.classes
    # tolist() once per array and dict(zip(...)) per row: the per-element work stays in C, which
    # is several times faster than indexing numpy scalars or Python comprehensions per class.
    lower = result.lower
    pairs = np.empty((*lower.shape, 2))  # [N][C][lo, hi], filled rather than np.stack'ed
    pairs[..., 0] = lower
    pairs[..., 1] = result.upper
    probabilities = result.probabilities.tolist()
    intervals = pairs.tolist()
    sets = _prediction_sets(result.prediction_sets, classes)
    # Every row has one value per class by construction: zip's strict check would only cost.
    predictions = [
        {
            "label": label,
            "probabilities": dict(zip(classes, p)),  # noqa: B905
            "intervals": dict(zip(classes, lo_hi)),  # noqa: B905
            "prediction_set": members,
        }
        for label, p, lo_hi, members in zip(
            result.labels.tolist(), probabilities, intervals, sets, strict=True
        )
    ]
    return {
        "predictions": predictions,
        "model": handle.name,
        "version": handle.version,
        "confidence_level": prediction.request.confidence_level,
        "request_id": prediction.request_id,
        "conformal_revision": result.conformal_revision,
    }


#: Up to this many classes a prediction set is looked up by its bit pattern (2**C lists).
_SET_TABLE_CLASSES = 8
#: ... and from this many rows: the lookup's few numpy calls cost more than it saves below.
_SET_TABLE_ROWS = 8


def _prediction_sets(members: NDArray[np.bool_], classes: list[str]) -> list[list[str]]:
    """Each row's set as its classes in class order; rows with equal sets share one list."""
    if len(classes) > _SET_TABLE_CLASSES or len(members) < _SET_TABLE_ROWS:
        return [list(compress(classes, row)) for row in members.tolist()]
    table = _set_table(tuple(classes))
    codes = members.astype(np.intp) @ (1 << np.arange(len(classes), dtype=np.intp))
    return list(map(table.__getitem__, codes.tolist()))


@lru_cache(maxsize=64)
def _set_table(classes: tuple[str, ...]) -> tuple[list[str], ...]:
    """Set number b (bit k: class k is in) -> its classes, for every b < 2**len(classes)."""
    return tuple(
        [c for k, c in enumerate(classes) if code >> k & 1] for code in range(1 << len(classes))
    )
