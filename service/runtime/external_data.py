"""Find ONNX tensors that keep their data in an external file, without importing ``onnx``.

A tensor with ``data_location = EXTERNAL`` names a file that ONNX Runtime reads when it builds the
session. The session is built from bytes, so that file is resolved against the server's working
directory, outside the bundle and outside the manifest's sha256: a crafted bundle could read any
file there and leak it through its probabilities. Our bundles never use external data, so any
such tensor refuses the bundle (docs/architecture.md).

The serving image has onnxruntime but not the ``onnx`` package, and onnxruntime cannot list a
model's tensors, so this walks the protobuf wire format itself: only the message fields that can
hold a tensor, a graph or a node are entered (field numbers from onnx.proto; a test checks them
against the ``onnx`` package), and every other field is skipped by its length.
"""

from __future__ import annotations

from collections.abc import Iterator

#: ``TensorProto.DataLocation.EXTERNAL``.
EXTERNAL = 1

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

# Message kinds and, for each, the length-delimited fields that hold a message worth entering.
MODEL, GRAPH, NODE, ATTRIBUTE, TENSOR, SPARSE, FUNCTION, TRAINING = (
    "ModelProto",
    "GraphProto",
    "NodeProto",
    "AttributeProto",
    "TensorProto",
    "SparseTensorProto",
    "FunctionProto",
    "TrainingInfoProto",
)
CHILDREN: dict[str, dict[int, str]] = {
    MODEL: {7: GRAPH, 20: TRAINING, 25: FUNCTION},
    GRAPH: {1: NODE, 5: TENSOR, 15: SPARSE},
    NODE: {5: ATTRIBUTE},
    ATTRIBUTE: {5: TENSOR, 6: GRAPH, 10: TENSOR, 11: GRAPH, 22: SPARSE, 23: SPARSE},
    SPARSE: {1: TENSOR, 2: TENSOR},
    FUNCTION: {7: NODE, 11: ATTRIBUTE},
    TRAINING: {1: GRAPH, 2: GRAPH},
    TENSOR: {},
}
#: TensorProto fields: ``external_data`` (repeated key/value) and ``data_location``.
TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 13, 14
#: TensorProto ``name``, for the error message.
TENSOR_NAME = 8

# Nesting bound: a real graph nests a few levels (If/Loop bodies); a hostile file is not allowed
# to make this walk arbitrarily deep.
_MAX_DEPTH = 64


class MalformedModel(ValueError):
    """The bytes are not a well-formed protobuf message."""


def external_tensors(model: bytes) -> list[str]:
    """Names of the tensors in an ONNX model (graphs, subgraphs, functions) stored externally.

    Raises :class:`MalformedModel` when the bytes cannot be walked as a protobuf message.
    """
    found: list[str] = []
    view = memoryview(model)
    stack: list[tuple[str, int, int, int]] = [(MODEL, 0, len(view), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise MalformedModel("the graph nests deeper than any real model")
        if kind == TENSOR:
            name = _external_tensor(view, start, end)
            if name is not None:
                found.append(name)
            continue
        children = CHILDREN[kind]
        for number, wire, value_start, value_end in _fields(view, start, end):
            child = children.get(number)
            if child is not None and wire == _LENGTH:
                stack.append((child, value_start, value_end, depth + 1))
    return found


def _external_tensor(view: memoryview, start: int, end: int) -> str | None:
    """The tensor's name (or a placeholder) if it keeps its data outside the model, else None."""
    name, external = "", False
    for number, wire, value_start, value_end in _fields(view, start, end):
        if number == TENSOR_DATA_LOCATION and wire == _VARINT:
            external = external or value_start == EXTERNAL
        elif number == TENSOR_EXTERNAL_DATA and wire == _LENGTH:
            external = True  # a location entry is a reference to a file, whatever the flag says
        elif number == TENSOR_NAME and wire == _LENGTH:
            name = bytes(view[value_start:value_end]).decode("utf-8", "replace")
    return (name or "<unnamed>") if external else None


def _fields(view: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field number, wire type, start, end)`` of each field; for a varint, (value, value)."""
    pos = start
    while pos < end:
        key, pos = _varint(view, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise MalformedModel("field number 0")
        if wire == _VARINT:
            value, pos = _varint(view, pos, end)
            yield number, wire, value, value
            continue
        if wire == _LENGTH:
            length, pos = _varint(view, pos, end)
            stop = pos + length
        elif wire == _FIXED64:
            stop = pos + 8
        elif wire == _FIXED32:
            stop = pos + 4
        else:  # groups (3, 4) are not used by onnx.proto; 6 and 7 do not exist
            raise MalformedModel(f"unsupported wire type {wire}")
        if stop > end:
            raise MalformedModel("a field runs past the end of its message")
        yield number, wire, pos, stop
        pos = stop


def _varint(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise MalformedModel("truncated or overlong varint")
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
