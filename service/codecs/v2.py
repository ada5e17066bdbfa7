"""The Open Inference Protocol (KServe V2 / Triton REST) codec, binary tensor extension included.

Inputs: one tensor per feature, named after the feature, shape ``[N]`` or ``[N, 1]``.
Numeric features take FP32 (also FP64, FP16 and the INT/UINT types, converted to float32);
a NaN is a missing value, an infinity is refused. Categorical features take BYTES (UTF-8 text;
``""`` or JSON ``null`` is missing); one trained from a True/False column also takes BOOL.
``data`` may be flat or nested (row-major), or the tensor may travel in the binary section
(``parameters.binary_data_size``, with the JSON header length in the
``Inference-Header-Content-Length`` header), which is what ``tritonclient.http`` sends by default.
``parameters.confidence_level`` sets the level (default from the settings).

Outputs, all ``[N, C]`` in the class order of the model metadata unless noted:
``probabilities``, ``lower``, ``upper`` (FP32), ``label`` (BYTES ``[N]``) and ``prediction_set``
(BOOL ``[N, C]``: a typed mask, because V2 has no list-of-strings-per-row type and a JSON string
per row would need a second decoder on the client). A request may name a subset in ``outputs``
and ask for any of them in binary (``parameters.binary_data``, or ``binary_data_output`` for all).

Every field is checked against the protocol's types before use: ``id`` a string, ``parameters``
(request, input and output level) an object of booleans, numbers and strings, ``shape`` a list
of non-negative integers, ``outputs`` a list of objects naming known outputs once. A field of
another type, ``null`` included, is a 400 naming it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from service.bundle import CategoricalFeature, Manifest
from service.codecs.columns import (
    ONLY_BOOL,
    ONLY_DICT,
    ONLY_LIST,
    ONLY_STR,
    bad_value,
    categorical_column,
    confidence_level,
    describe,
    is_boolean_feature,
    load_json,
    numeric_columns,
    numeric_tensor,
)
from service.codecs.context import context_names, empty_context, parameter_context
from service.errors import InvalidInput
from service.types import FeatureBatch, InferenceRequest, ModelHandle, Prediction, Uncertainty

HEADER_LENGTH = "inference-header-content-length"

#: V2 numeric datatypes accepted for a numeric feature, with their little-endian numpy dtype.
NUMERIC_DATATYPES: dict[str, str] = {
    "FP32": "<f4",
    "FP64": "<f8",
    "FP16": "<f2",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
NUMERIC_DATATYPE_NAMES = frozenset(NUMERIC_DATATYPES)

OUTPUT_DATATYPES: dict[str, str] = {
    "probabilities": "FP32",
    "lower": "FP32",
    "upper": "FP32",
    "label": "BYTES",
    "prediction_set": "BOOL",
}


def split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """Split a body into its JSON header and binary section (empty without the extension)."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    try:
        size = int(header_length)
    except ValueError:
        size = -1
    if not 0 <= size <= len(view):
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length!r} is not a length within the "
            f"body of {len(view)} bytes",
            expected="the byte length of the JSON header",
        )
    return view[:size], view[size:]


def decode_infer_request(
    body: bytes,
    header_length: str | None,
    manifest: Manifest,
    *,
    max_rows: int,
    default_level: float,
) -> InferenceRequest:
    """Validate a V2 inference request; errors name the input, the element and the expectation."""
    header, binary = split_body(body, header_length)
    return decode_infer_payload(
        load_json(header), binary, manifest, max_rows=max_rows, default_level=default_level
    )


def decode_infer_payload(
    payload: Any,
    binary: memoryview,
    manifest: Manifest,
    *,
    max_rows: int,
    default_level: float,
) -> InferenceRequest:
    """A parsed V2 request and its binary section, validated (the gRPC codec shares it).

    ``binary`` holds the tensors whose ``parameters.binary_data_size`` says they travel there.
    """
    if type(payload) is not dict:
        raise InvalidInput(f"the request must be a JSON object, got {describe(payload)}")
    # Every field is checked against the protocol's types (an optional field, when present, has
    # its type: null is not an object or a string), so no shape of body reaches a 500.
    request_id = payload.get("id")
    if "id" in payload and type(request_id) is not str:
        raise InvalidInput(
            f"'id' must be a string, got {describe(request_id)}", field="id", expected="a string"
        )
    parameters = _parameters(payload)
    level = default_level
    if "confidence_level" in parameters:
        level = confidence_level(parameters["confidence_level"], "parameters.confidence_level")
    binary_default = parameters.get("binary_data_output", False)
    if type(binary_default) is not bool:
        _flag(parameters, "binary_data_output", "parameters.binary_data_output")  # raises
    columns, rows = _decode_inputs(payload.get("inputs"), binary, manifest, max_rows)
    outputs = _requested_outputs(payload.get("outputs"), "outputs" in payload, binary_default)
    declared = context_names(manifest)
    context: dict[str, NDArray[np.object_]] | None
    if "context" in parameters:
        context = parameter_context(parameters["context"], rows, declared)
    else:
        context = empty_context(rows, declared)
    batch = FeatureBatch(columns=columns, rows=rows)
    return InferenceRequest(batch, level, request_id, outputs, context)


_NO_PARAMETERS: dict[str, Any] = {}
_PARAMETER_TYPES = frozenset({bool, int, float, str})
PARAMETER_EXPECTED = "an object whose values are booleans, numbers or strings"


def _parameters(
    container: dict[str, Any], where: str = "", feature: str | None = None
) -> dict[str, Any]:
    """``container["parameters"]`` checked as the protocol's ``$parameters``; {} when absent.

    ``where`` is the container's place (``inputs[0]``; empty for the request itself).
    """
    params = container.get("parameters", _NO_PARAMETERS)
    # The common cases (absent, or a few scalar values) return without building any text.
    if params is _NO_PARAMETERS or (
        type(params) is dict and _PARAMETER_TYPES.issuperset(map(type, params.values()))
    ):
        return params
    field = f"{where}.parameters" if where else "parameters"
    named = {} if feature is None else {"feature": feature}
    if type(params) is not dict:
        raise InvalidInput(
            f"{field} must be an object, got {describe(params)}",
            field=field,
            expected=PARAMETER_EXPECTED,
            **named,
        )
    key, value = next((k, v) for k, v in params.items() if type(v) not in _PARAMETER_TYPES)
    field = f"{field}[{key!r}]"
    raise InvalidInput(
        f"{field}: a parameter is a boolean, a number or a string, got {describe(value)}",
        field=field,
        expected="a boolean, a number or a string",
        **named,
    )


def _flag(parameters: dict[str, Any], key: str, field: str) -> bool:
    """A boolean parameter, False when absent."""
    value = parameters.get(key, False)
    if type(value) is not bool:
        raise InvalidInput(
            f"{field} must be true or false, got {describe(value)}",
            field=field,
            expected="a boolean",
        )
    return value


def _decode_inputs(
    inputs: Any, binary: memoryview, manifest: Manifest, max_rows: int
) -> tuple[dict[str, NDArray[np.generic]], int]:
    if not binary:
        uniform = _decode_uniform(inputs, manifest, max_rows)
        if uniform is not None:
            return uniform
    if type(inputs) is not list or not inputs:
        raise InvalidInput(
            "'inputs' must be a non-empty list with one tensor per feature",
            field="inputs",
            expected=f"the inputs {manifest.feature_names}",
        )
    features = manifest.features_by_name
    decoded: dict[str, NDArray[np.generic]] = {}
    json_numeric: dict[str, list[Any]] = {}
    rows: int | None = None
    # The last shape checked: a tensor with an equal shape of ints has the same rows, so the
    # full check runs once per request, not once per input (30 inputs for the demo model).
    checked_shape: Any = None
    offset = 0
    for k, tensor in enumerate(inputs):
        if type(tensor) is not dict or type(tensor.get("name")) is not str:
            got = describe(tensor.get("name")) if type(tensor) is dict else describe(tensor)
            raise InvalidInput(
                f"inputs[{k}] must be an object with a string 'name', got {got}",
                field=f"inputs[{k}]",
                expected="an object with a string 'name'",
            )
        name: str = tensor["name"]
        feature = features.get(name)
        if feature is None:
            raise InvalidInput(
                f"unknown input {name!r}: expected the inputs {manifest.feature_names}",
                feature=name,
                expected=f"the inputs {manifest.feature_names}",
            )
        if name in decoded or name in json_numeric:
            raise InvalidInput(f"input {name!r} appears twice", feature=name)
        shape = tensor.get("shape")
        if (
            rows is not None
            and shape == checked_shape  # so a list of 1 or 2 numbers equal to valid dimensions
            and type(shape[0]) is int  # ints, not True or 1.0 (which compare equal to 1)
            and (len(shape) == 1 or type(shape[1]) is int)
        ):
            n = rows
        else:
            n = _rows_from_shape(shape, name, max_rows)
        if rows is None:
            rows = n
            checked_shape = shape
        elif n != rows:
            raise InvalidInput(
                f"input {name!r} has {n} rows but the previous inputs have {rows}",
                feature=name,
                expected=f"shape [{rows}] or [{rows}, 1]",
            )
        datatype = tensor.get("datatype")
        categories: list[str] = []
        if isinstance(feature, CategoricalFeature):
            categorical = True
            categories = feature.categories
            # BYTES is the common case; only then is it worth asking whether the feature was
            # trained from a True/False column, which may also travel as a BOOL tensor (what a
            # client sends for a numpy bool array).
            ok = datatype == "BYTES" or (datatype == "BOOL" and is_boolean_feature(categories))
        else:
            categorical = False
            ok = type(datatype) is str and datatype in NUMERIC_DATATYPES
        if not ok:
            boolean = categorical and is_boolean_feature(categories)
            expected_types = (
                ("BYTES or BOOL" if boolean else "BYTES")
                if categorical
                else "FP32 (or FP64, FP16, INT*, UINT*)"
            )
            raise InvalidInput(
                f"input {name!r}: expected datatype {expected_types}, got {describe(datatype)}",
                feature=name,
                expected=expected_types,
            )
        params = _parameters(tensor, f"inputs[{k}]", name) if "parameters" in tensor else None
        size = None if params is None else params.get("binary_data_size")
        if size is not None:
            if "data" in tensor:
                raise InvalidInput(
                    f"input {name!r} has both 'data' and parameters.binary_data_size: send one",
                    feature=name,
                )
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {size!r} runs past the binary section "
                    f"({len(binary)} bytes)",
                    feature=name,
                )
            chunk = binary[offset : offset + size]
            offset += size
            decoded[name] = _binary_column(chunk, str(datatype), n, name, categories)
        else:
            data = tensor.get("data")
            if type(data) is not list or (data and type(data[0]) is list):
                data = _flat(data, name)
            if len(data) != n:
                raise InvalidInput(
                    f"input {name!r}: shape says {n} elements but 'data' holds {len(data)}",
                    feature=name,
                    expected=f"{n} elements",
                )
            if categorical:
                if datatype == "BOOL" and not ONLY_BOOL.issuperset(map(type, data)):
                    i = next(i for i, v in enumerate(data) if type(v) is not bool)
                    raise bad_value(i, name, "true or false (a BOOL tensor)", data[i], "element")
                decoded[name] = categorical_column(data, name, "element", categories)
            else:  # converted together below, in one numpy pass
                json_numeric[name] = data
    if json_numeric:
        names = list(json_numeric)
        table = numeric_columns(list(json_numeric.values()), names)
        for j, name in enumerate(names):
            decoded[name] = table[j][:, None]
    if offset != len(binary):
        raise InvalidInput(
            f"the binary section has {len(binary) - offset} bytes no input claims",
            expected="binary_data_size on each binary input",
        )
    missing = [n for n in manifest.feature_names if n not in decoded]
    if missing:
        raise InvalidInput(
            f'missing input(s) {missing}: send one tensor per feature (NaN or "" is a '
            "missing value)",
            feature=missing[0],
            expected=f"the inputs {manifest.feature_names}",
        )
    assert rows is not None  # inputs is non-empty
    # Graph input order, whatever order the client sent.
    return {n: decoded[n] for n in manifest.feature_names}, rows


_NOT_PLAIN_TENSOR = ("parameters",)


def _decode_uniform(
    inputs: Any, manifest: Manifest, max_rows: int
) -> tuple[dict[str, NDArray[np.generic]], int] | None:
    """The common request, checked in bulk: one JSON tensor per feature, all of one valid shape,
    flat ``data``, plain datatypes (numeric, or BYTES for a categorical), no other fields.

    None for anything else; the per-input checks then decode it or name what is wrong. Value
    errors are raised by the same column functions, in the same order (categoricals in input
    order, then the numeric table). Checked one by one, the demo model's 30 inputs cost several
    microseconds each.
    """
    names = manifest.feature_names
    if (
        type(inputs) is not list
        or len(inputs) != len(names)
        or not ONLY_DICT.issuperset(map(type, inputs))
        or {4} != set(map(len, inputs))  # name, shape, datatype, data: no parameters
    ):
        return None
    try:
        sent, shapes, datatypes, data = zip(*map(_TENSOR_FIELDS, inputs), strict=True)
    except KeyError:
        return None
    if (
        not ONLY_STR.issuperset(map(type, sent))
        or set(sent) != set(names)  # and as many names as features: none twice
        or not ONLY_STR.issuperset(map(type, datatypes))
        or not ONLY_LIST.issuperset(map(type, data))
    ):
        return None
    shape = shapes[0]
    if not (
        type(shape) is list
        and len(shape) in (1, 2)
        and type(shape[0]) is int
        and 0 < shape[0] <= max_rows
        and (len(shape) == 1 or (type(shape[1]) is int and shape[1] == 1))
    ):
        return None
    # One C-level comparison for every shape; JSON text tells 1 from true and 1.0.
    if orjson.dumps(shapes) != orjson.dumps((shape,) * len(shapes)):
        return None
    rows: int = shape[0]
    if {rows} != set(map(len, data)) or list in set(map(type, map(itemgetter(0), data))):
        return None  # nested [[v], ...] data: the per-input path flattens it
    datatype_of = dict(zip(sent, datatypes, strict=True))
    numeric = manifest.numeric_feature_names
    categorical = manifest.categorical_feature_names
    if not NUMERIC_DATATYPE_NAMES.issuperset(datatype_of[name] for name in numeric) or any(
        datatype_of[name] != "BYTES" for name in categorical
    ):
        return None
    data_of = dict(zip(sent, data, strict=True))
    decoded: dict[str, NDArray[np.generic]] = {}
    if categorical:
        features = manifest.features_by_name
        for name in sent:  # input order, as the per-input path raises
            feature = features[name]
            if isinstance(feature, CategoricalFeature):
                decoded[name] = categorical_column(
                    data_of[name], name, "element", feature.categories
                )
    if numeric:
        table = numeric_columns([data_of[name] for name in numeric], numeric)
        decoded.update(zip(numeric, table[:, :, None], strict=True))
    return {name: decoded[name] for name in names}, rows


_TENSOR_FIELDS = itemgetter("name", "shape", "datatype", "data")


def _rows_from_shape(shape: Any, name: str, max_rows: int) -> int:
    ok = (
        type(shape) is list
        and len(shape) in (1, 2)
        and all(type(d) is int and d >= 0 for d in shape)
        and (len(shape) == 1 or shape[1] == 1)
    )
    if not ok:
        raise InvalidInput(
            f"input {name!r}: expected shape [N] or [N, 1], got {shape!r}",
            feature=name,
            expected="shape [N] or [N, 1]",
        )
    n: int = shape[0]
    if n == 0:
        raise InvalidInput(f"input {name!r} has no rows: send at least one", feature=name)
    if n > max_rows:
        raise InvalidInput(
            f"input {name!r} has {n} rows, more than the limit of {max_rows} per request",
            feature=name,
            limit=max_rows,
        )
    return n


def _flat(data: Any, name: str) -> list[Any]:
    if type(data) is not list:
        raise InvalidInput(
            f"input {name!r}: expected 'data' (a list) or parameters.binary_data_size, "
            f"got {describe(data)}",
            feature=name,
        )
    if data and type(data[0]) is list:  # row-major nested [[v], [v], ...]
        flat: list[Any] = []
        for row in data:
            if type(row) is not list:
                raise InvalidInput(f"input {name!r}: ragged nested 'data'", feature=name)
            flat.extend(row)
        return flat
    return data


def _binary_column(
    chunk: memoryview, datatype: str, n: int, name: str, categories: list[str]
) -> NDArray[np.generic]:
    if datatype == "BYTES":
        return categorical_column(_deserialize_bytes(chunk, n, name), name, "element", categories)
    if datatype == "BOOL":
        return categorical_column(_deserialize_bool(chunk, n, name), name, "element", categories)
    dtype = np.dtype(NUMERIC_DATATYPES[datatype])
    if len(chunk) != n * dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: {len(chunk)} binary bytes for {n} {datatype} elements "
            f"(expected {n * dtype.itemsize})",
            feature=name,
            expected=f"{n * dtype.itemsize} bytes",
        )
    return numeric_tensor(np.frombuffer(chunk, dtype=dtype), name)


def _deserialize_bool(chunk: memoryview, n: int, name: str) -> list[Any]:
    """Triton's BOOL wire format: one byte per element, 0 or 1."""
    if len(chunk) != n:
        raise InvalidInput(
            f"input {name!r}: {len(chunk)} binary bytes for {n} BOOL elements (expected {n})",
            feature=name,
            expected=f"{n} bytes",
        )
    raw = bytes(chunk)
    bad = next((i for i, b in enumerate(raw) if b > 1), None)
    if bad is not None:
        raise bad_value(bad, name, "a BOOL byte (0 or 1)", raw[bad], "element")
    return [b == 1 for b in raw]


def _deserialize_bytes(chunk: memoryview, n: int, name: str) -> list[Any]:
    """Triton's BYTES wire format: per element a little-endian uint32 length, then the bytes."""
    values: list[Any] = []
    offset, end = 0, len(chunk)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(f"input {name!r}: truncated BYTES element", feature=name)
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(f"input {name!r}: truncated BYTES element", feature=name)
        try:
            values.append(str(chunk[offset : offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(
                f"element {len(values)}, input {name!r}: expected UTF-8 text",
                instance=len(values),
                feature=name,
                expected="UTF-8 text",
            ) from None
        offset += length
    if len(values) != n:
        raise InvalidInput(
            f"input {name!r}: shape says {n} elements but the binary data holds {len(values)}",
            feature=name,
            expected=f"{n} elements",
        )
    return values


def _requested_outputs(outputs: Any, present: bool, default: bool) -> tuple[tuple[str, bool], ...]:
    if not present:
        return tuple((name, default) for name in OUTPUT_DATATYPES)
    if type(outputs) is not list:
        raise InvalidInput(
            f"'outputs' must be a list of objects with a 'name', got {describe(outputs)}",
            field="outputs",
            expected="a list",
        )
    chosen: list[tuple[str, bool]] = []
    for k, out in enumerate(outputs):
        if type(out) is not dict:
            raise InvalidInput(
                f"outputs[{k}] must be an object with a 'name', got {describe(out)}",
                field=f"outputs[{k}]",
                expected="an object with a 'name'",
            )
        name = out.get("name")
        if type(name) is not str or name not in OUTPUT_DATATYPES:
            shown = repr(name) if type(name) is str else describe(name)
            raise InvalidInput(
                f"outputs[{k}]: unknown output {shown}: expected one of {list(OUTPUT_DATATYPES)}",
                field=f"outputs[{k}].name",
                expected=str(list(OUTPUT_DATATYPES)),
            )
        if any(name == seen for seen, _ in chosen):
            raise InvalidInput(
                f"outputs[{k}]: output {name!r} is requested twice", field=f"outputs[{k}].name"
            )
        params = _parameters(out, f"outputs[{k}]")
        binary = default
        if "binary_data" in params:
            binary = _flag(params, "binary_data", f"outputs[{k}].parameters.binary_data")
        chosen.append((name, binary))
    return tuple(chosen)


def encode_infer_response(prediction: Prediction) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when any output travels in binary."""
    result = prediction.uncertainty
    request = prediction.request
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in request.outputs:
        tensor, shape = output_tensor(result, name)
        entry: dict[str, Any] = {"name": name, "datatype": OUTPUT_DATATYPES[name], "shape": shape}
        if binary:
            raw = serialize_bytes(tensor) if isinstance(tensor, list) else tensor.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = tensor.reshape(-1) if isinstance(tensor, np.ndarray) else tensor
        outputs.append(entry)
    header = orjson.dumps(
        {
            "model_name": prediction.handle.name,
            "model_version": str(prediction.handle.version),
            # The body's id is echoed as sent; without one, the id the pipeline chose.
            "id": request.request_id or prediction.request_id,
            "parameters": {
                "confidence_level": request.confidence_level,
                "conformal_revision": result.conformal_revision,
            },
            "outputs": outputs,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def output_tensor(result: Uncertainty, name: str) -> tuple[NDArray[Any] | list[str], list[int]]:
    """One output of ``OUTPUT_DATATYPES``, typed as it travels (labels as text), and its shape."""
    n, c = result.probabilities.shape
    if name == "label":
        return result.labels.tolist(), [n]
    if name == "prediction_set":
        return np.ascontiguousarray(result.prediction_sets, dtype=np.bool_), [n, c]
    source = {"probabilities": result.probabilities, "lower": result.lower}.get(name, result.upper)
    return np.ascontiguousarray(source, dtype=np.float32), [n, c]


def serialize_bytes(values: Sequence[str | bytes]) -> bytes:
    """Triton's BYTES wire format: per element a little-endian uint32 length, then the bytes."""
    parts = []
    for value in values:
        raw = value if type(value) is bytes else str(value).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def model_metadata(handle: ModelHandle, versions: list[int]) -> dict[str, Any]:
    """V2 model metadata: inputs and outputs as a Triton client expects them."""
    manifest = handle.manifest
    c = len(manifest.classes)
    return {
        "name": handle.name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {
                "name": f.name,
                "datatype": "BYTES" if isinstance(f, CategoricalFeature) else "FP32",
                "shape": [-1, 1],
            }
            for f in manifest.features
        ],
        "outputs": [
            {"name": name, "datatype": dt, "shape": [-1] if name == "label" else [-1, c]}
            for name, dt in OUTPUT_DATATYPES.items()
        ],
        "parameters": {
            "classes": manifest.classes,
            "version": str(handle.version),
            "execution_provider": handle.provider,
            "conformal_revision": (
                0 if handle.runtime is None else handle.runtime.conformal.current[1]
            ),
        },
    }
