"""``ModelInfer`` as a codec of the request pipeline: a ``ModelInferRequest`` in, a
``ModelInferResponse`` (or the :class:`GrpcError` the call ends with) out.

The request is rewritten as the V2 REST request it is the twin of (tensors in ``contents``
become ``data``; ``raw_input_contents`` becomes the binary section, one ``binary_data_size`` per
input) and validated by the V2 decoder itself, so gRPC refuses bad input with the REST
protocol's own messages and limits (docs/architecture.md, "Request path"). Every output travels
in ``raw_output_contents``: that is where ``tritonclient.grpc`` reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from service.bundle import Manifest
from service.codecs.base import DecodeLimits
from service.codecs.v2 import (
    OUTPUT_DATATYPES,
    decode_infer_payload,
    output_tensor,
    serialize_bytes,
)
from service.errors import InvalidInput, ProbserveError
from service.grpc.grpc_predict_v2_pb2 import (
    InferParameter,
    ModelInferRequest,
    ModelInferResponse,
)
from service.grpc.status import GrpcError, grpc_error
from service.types import InferenceRequest, Prediction

ENDPOINT_GRPC = "grpc_infer"

#: Which ``InferTensorContents`` field holds a datatype's elements (FP16 travels raw only).
CONTENTS_FIELDS: dict[str, str] = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "BOOL": "bool_contents",
}


def parameter_values(parameters: Mapping[str, InferParameter]) -> dict[str, Any]:
    """A parameter map as V2 JSON ``parameters``; an unset value is ``None`` (and refused)."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        values[key] = None if which is None else getattr(parameter, which)
    return values


def as_v2_payload(request: ModelInferRequest) -> tuple[dict[str, Any], memoryview]:
    """The V2 REST request (parsed JSON and binary section) that says what ``request`` says."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs",
            field="raw_input_contents",
            expected="one entry per input, in the order of 'inputs'",
        )
    chunks: list[bytes] = []
    inputs: list[dict[str, Any]] = []
    # Raw FP32 tensors become JSON numbers: the V2 decoder checks every numeric input of a
    # request in one numpy pass, where raw tensors cost a pass each (30 for the demo model).
    numbers: list[tuple[dict[str, Any], bytes]] = []
    for k, tensor in enumerate(request.inputs):
        entry: dict[str, Any] = {
            "name": tensor.name,
            "shape": list(tensor.shape),
            "datatype": tensor.datatype,
        }
        inputs.append(entry)
        parameters = parameter_values(tensor.parameters) if tensor.parameters else {}
        if parameters:
            entry["parameters"] = parameters
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"input {tensor.name!r} has both 'contents' and raw_input_contents: send one",
                    feature=tensor.name,
                )
            if tensor.datatype == "FP32" and len(raw[k]) % 4 == 0 and not parameters:
                numbers.append((entry, raw[k]))
            else:
                entry["parameters"] = {**parameters, "binary_data_size": len(raw[k])}
                chunks.append(raw[k])
        elif tensor.datatype == "BYTES":
            # The BYTES wire format, so the binary decoder checks the UTF-8 as it does for REST.
            text = serialize_bytes(tensor.contents.bytes_contents)
            entry["parameters"] = {**parameters, "binary_data_size": len(text)}
            chunks.append(text)
        else:
            field = CONTENTS_FIELDS.get(tensor.datatype)
            # An unknown datatype is refused by name before 'data' is read.
            entry["data"] = [] if field is None else list(getattr(tensor.contents, field))
    if numbers:
        for (entry, _), data in zip(numbers, _as_numbers([b for _, b in numbers]), strict=True):
            entry["data"] = data
    payload: dict[str, Any] = {"inputs": inputs}
    if request.id:
        payload["id"] = request.id
    if request.parameters:
        payload["parameters"] = parameter_values(request.parameters)
    if request.outputs:
        payload["outputs"] = [
            {"name": out.name, "parameters": parameter_values(out.parameters)}
            if out.parameters
            else {"name": out.name}
            for out in request.outputs
        ]
    return payload, memoryview(b"".join(chunks))


def _as_numbers(raws: list[bytes]) -> list[list[float]]:
    """Little-endian FP32 tensors as lists of numbers: one numpy call when all are one size."""
    if len({len(r) for r in raws}) == 1 and raws[0]:
        table: list[list[float]] = (
            np.frombuffer(b"".join(raws), dtype="<f4").reshape(len(raws), -1).tolist()
        )
        return table
    return [np.frombuffer(r, dtype="<f4").tolist() for r in raws]


class GrpcCodec:
    """``GRPCInferenceService/ModelInfer``."""

    protocol = "grpc"
    endpoint = ENDPOINT_GRPC

    def decode(
        self, payload: ModelInferRequest, manifest: Manifest, limits: DecodeLimits
    ) -> InferenceRequest:
        """The request, validated against the model exactly as its V2 REST twin would be."""
        v2, binary = as_v2_payload(payload)
        return decode_infer_payload(
            v2, binary, manifest, max_rows=limits.max_rows, default_level=limits.default_level
        )

    def encode(self, prediction: Prediction) -> ModelInferResponse:
        """Every requested output in ``raw_output_contents``, in the order requested."""
        request = prediction.request
        result = prediction.uncertainty
        response = ModelInferResponse(
            model_name=prediction.handle.name,
            model_version=str(prediction.handle.version),
            id=request.request_id or prediction.request_id,
        )
        response.parameters["confidence_level"].double_param = request.confidence_level
        response.parameters["conformal_revision"].int64_param = result.conformal_revision
        for name, _binary in request.outputs:  # every gRPC output is raw
            tensor, shape = output_tensor(result, name)
            response.outputs.add(name=name, datatype=OUTPUT_DATATYPES[name], shape=shape)
            raw = serialize_bytes(tensor) if isinstance(tensor, list) else tensor.tobytes()
            response.raw_output_contents.append(raw)
        return response

    def error(self, exc: ProbserveError, request_id: str) -> GrpcError:
        """The status the call ends with."""
        return grpc_error(exc, request_id)


GRPC = GrpcCodec()
