"""The two REST protocols as codecs of the request pipeline: body bytes in, an Answer out."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from service.bundle import Manifest
from service.codecs.base import DecodeLimits
from service.codecs.records import decode_predict_body, encode_predict_response
from service.codecs.v2 import decode_infer_request, encode_infer_response
from service.errors import ProbserveError
from service.explain import encode_explanation
from service.http.answer import Answer, error_answer
from service.types import Explanation, InferenceRequest, Prediction

ENDPOINT_V1 = "v1_predict"
ENDPOINT_V2 = "v2_infer"
ENDPOINT_EXPLAIN = "v1_explain"


class NativeCodec:
    """``POST /v1/models/{name}[/versions/{v}]/predict``: the body is the JSON request."""

    protocol = "v1"
    endpoint = ENDPOINT_V1

    def decode(self, payload: bytes, manifest: Manifest, limits: DecodeLimits) -> InferenceRequest:
        """The native request, validated against the model."""
        return _native_request(payload, manifest, limits)

    def encode(self, prediction: Prediction) -> Answer:
        """200 with the native answer."""
        body = orjson.dumps(encode_predict_response(prediction))
        return Answer(200, body, prediction.request_id)

    def error(self, exc: ProbserveError, request_id: str) -> Answer:
        """The native error body."""
        return error_answer(exc, request_id, v2=False)


@dataclass(frozen=True, slots=True)
class V2Body:
    """A V2 body and its ``Inference-Header-Content-Length`` (binary tensor extension)."""

    body: bytes
    header_length: str | None = None


class V2Codec:
    """``POST /v2/models/{name}[/versions/{v}]/infer`` (JSON or binary tensor extension)."""

    protocol = "v2"
    endpoint = ENDPOINT_V2

    def decode(self, payload: V2Body, manifest: Manifest, limits: DecodeLimits) -> InferenceRequest:
        """The V2 request, validated against the model."""
        return decode_infer_request(
            payload.body,
            payload.header_length,
            manifest,
            max_rows=limits.max_rows,
            default_level=limits.default_level,
        )

    def encode(self, prediction: Prediction) -> Answer:
        """200 with the V2 answer; binary outputs follow a JSON header of stated length."""
        out, json_length = encode_infer_response(prediction)
        if json_length is None:
            return Answer(200, out, prediction.request_id)
        header = [(b"inference-header-content-length", str(json_length).encode())]
        return Answer(200, out, prediction.request_id, "application/octet-stream", header)

    def error(self, exc: ProbserveError, request_id: str) -> Answer:
        """The V2 error body."""
        return error_answer(exc, request_id, v2=True)


class ExplainCodec:
    """``POST /v1/models/{name}[/versions/{v}]/explain``: a native predict body in, attributions
    with their intervals out, one per instance."""

    protocol = "v1"
    endpoint = ENDPOINT_EXPLAIN

    def decode(self, payload: bytes, manifest: Manifest, limits: DecodeLimits) -> InferenceRequest:
        """The native request, validated against the model (the explainer bounds its rows)."""
        return _native_request(payload, manifest, limits)

    def encode(self, explanation: Explanation) -> Answer:
        """200 with one explanation per instance, in order."""
        manifest = explanation.handle.manifest
        features, classes = manifest.feature_names, manifest.classes
        body = {
            "explanations": [
                encode_explanation(e, features, classes) for e in explanation.outcome.explanations
            ],
            "model": explanation.handle.name,
            "version": explanation.handle.version,
            "confidence_level": explanation.request.confidence_level,
            "method": explanation.method,
            "request_id": explanation.request_id,
        }
        return Answer(200, orjson.dumps(body), explanation.request_id)

    def error(self, exc: ProbserveError, request_id: str) -> Answer:
        """The native error body."""
        return error_answer(exc, request_id, v2=False)


def _native_request(payload: bytes, manifest: Manifest, limits: DecodeLimits) -> InferenceRequest:
    return decode_predict_body(
        payload, manifest, max_rows=limits.max_rows, default_level=limits.default_level
    )


NATIVE = NativeCodec()
V2 = V2Codec()
EXPLAIN = ExplainCodec()
