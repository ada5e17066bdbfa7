"""OpenAPI description of the hot paths, with examples built from a model that actually serves.

The lean front validates payloads with the codecs, not with pydantic, so the request schemas here
are documentation only (hand-written JSON Schema). The examples are filled in when the schema is
first asked for after start-up, from the first served model's manifest sample rows, so "Try it
out" on /docs sends a request that succeeds against this very server.
"""

from __future__ import annotations

from typing import Any

from service.bundle import Manifest
from service.codecs.examples import infer_example, predict_example
from service.codecs.v2 import NUMERIC_DATATYPES
from service.uncertainty.levels import MAX_CONFIDENCE_LEVEL, MIN_CONFIDENCE_LEVEL

_VALUE = {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "integer"}, {"type": "null"}]}

PREDICT_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["instances"],
    "additionalProperties": False,
    "properties": {
        "instances": {
            "type": "array",
            "minItems": 1,
            "description": "One object per row, keyed by feature name; null is a missing value.",
            # An empty row is refused (400): say so, so generated clients and fuzzers agree.
            "items": {"type": "object", "minProperties": 1, "additionalProperties": _VALUE},
        },
        "confidence_level": {
            "type": "number",
            "minimum": MIN_CONFIDENCE_LEVEL,
            "maximum": MAX_CONFIDENCE_LEVEL,
            "description": "Level of the intervals and prediction sets (default from settings).",
        },
    },
}

V2_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        # BOOL: prediction_set goes out as a BOOL mask; a True/False feature may come in as one.
        "datatype": {"type": "string", "enum": [*NUMERIC_DATATYPES, "BYTES", "BOOL"]},
        "data": {"type": "array", "items": {}},
        "parameters": {"type": "object"},
    },
}

INFER_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "items": V2_TENSOR_SCHEMA},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
        "parameters": {
            "type": "object",
            "properties": {
                "confidence_level": {
                    "type": "number",
                    "minimum": MIN_CONFIDENCE_LEVEL,
                    "maximum": MAX_CONFIDENCE_LEVEL,
                }
            },
        },
    },
}

PREDICT_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "predictions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
                    "intervals": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "array",
                            "items": {"type": "number"},
                            "minItems": 2,
                            "maxItems": 2,
                        },
                    },
                    "prediction_set": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "confidence_level": {"type": "number"},
        "request_id": {"type": "string"},
        "conformal_revision": {
            "type": "integer",
            "minimum": 0,
            "description": (
                "Which conformal scores the prediction sets came from: 0 the bundle's "
                "calibration split, N the adapted revision the drift monitor published."
            ),
        },
    },
}

_NUMBER_PER_CLASS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "number"}}
EXPLAIN_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "explanations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["label", "base_values", "attributions", "method", "additivity_error"],
                "properties": {
                    "label": {"type": "string"},
                    "base_values": _NUMBER_PER_CLASS,
                    "attributions": {
                        "type": "object",
                        "description": "feature -> class -> the attribution and its interval",
                        "additionalProperties": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["value", "lower", "upper"],
                                "properties": {
                                    "value": {"type": "number"},
                                    "lower": {"type": "number"},
                                    "upper": {"type": "number"},
                                },
                            },
                        },
                    },
                    "method": {"type": "string"},
                    "additivity_error": _NUMBER_PER_CLASS,
                },
            },
        },
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "confidence_level": {"type": "number"},
        "method": {"type": "string"},
        "request_id": {"type": "string"},
    },
}

INFER_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "outputs": {"type": "array", "items": V2_TENSOR_SCHEMA},
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "type": {"type": "string"},
        "instance": {"type": "integer"},
        "feature": {"type": "string"},
        "expected": {"type": "string"},
        "request_id": {"type": "string"},
    },
}


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``requestBody`` of an operation taking a JSON body."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _path_parameter(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "title": name.title()},
    }


def hot_paths() -> dict[str, Any]:
    """The OpenAPI path items of the four routes the lean front serves (service/http/lean.py)."""
    native = {"tags": ["native"], **request_body(PREDICT_REQUEST_SCHEMA)}
    v2 = {"tags": ["open inference protocol (v2)"], **request_body(INFER_REQUEST_SCHEMA)}
    operations = [
        ("/v1/models/{name}/predict", "predict_latest", "Predict with the newest version", native),
        (
            "/v1/models/{name}/versions/{version}/predict",
            "predict_version",
            "Predict with one version",
            native,
        ),
        ("/v2/models/{name}/infer", "infer_latest", "V2 inference", v2),
        (
            "/v2/models/{name}/versions/{version}/infer",
            "infer_version",
            "V2 inference with one version",
            v2,
        ),
    ]
    paths: dict[str, Any] = {}
    for path, operation_id, summary, base in operations:
        schema = PREDICT_RESPONSE_SCHEMA if path.endswith("/predict") else INFER_RESPONSE_SCHEMA
        names = ["name", "version"] if "{version}" in path else ["name"]
        post = {
            **base,
            "summary": summary,
            "operationId": operation_id,
            "parameters": [_path_parameter(n) for n in names],
            "responses": {str(k): v for k, v in responses(schema).items()},
        }
        paths[path] = {"post": post}
    return paths


def responses(schema: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """Documented responses of a hot-path route."""
    error = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
    return {
        200: {"description": "Predictions", "content": {"application/json": {"schema": schema}}},
        400: {"description": "Invalid input (names instance, feature, expectation)", **error},
        404: {"description": "Unknown model or version", **error},
        413: {"description": "Body over the size limit", **error},
        503: {"description": "Model not loaded (the reason says why), or overloaded", **error},
    }


_ERROR_DESCRIPTIONS = {
    400: "Invalid input, or a bundle that failed to load",
    401: "Missing or wrong bearer token",
    403: "Model control is off (no admin token configured)",
    404: "Unknown model or version",
    503: "Not ready: starting, stopping, or the model has no loaded version",
}

_NOT_READY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string"},
        "models": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "state": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}
_V2_READY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ready"],
    "properties": {"ready": {"type": "boolean"}},
}


def error_statuses(path: str) -> tuple[int, ...]:
    """The error statuses the service really sends on ``path`` (FastAPI's 422 is never sent)."""
    if path.startswith("/v2/repository/"):
        model_control = path.endswith(("/load", "/unload"))
        return (400, 401, 403, 404, 503) if model_control else (401, 403, 503)
    if "{name}" in path:
        return (404, 503)
    if path == "/v1/models":
        return (503,)
    return ()


def document_errors(schema: dict[str, Any]) -> None:
    """Make a generated OpenAPI document list the error answers the service really sends.

    Every error is JSON in one shape (service/http/errors.py), 400 replaces FastAPI's 422, and
    the readiness probes answer 503 with their own bodies.
    """
    error = {"application/json": {"schema": ERROR_SCHEMA}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            answers: dict[str, Any] = operation.setdefault("responses", {})
            answers.pop("422", None)
            for status in error_statuses(path):
                answers.setdefault(
                    str(status), {"description": _ERROR_DESCRIPTIONS[status], "content": error}
                )
    probes = {"/readyz": _NOT_READY_SCHEMA, "/v2/health/ready": _V2_READY_SCHEMA}
    for path, body in probes.items():
        get = schema.get("paths", {}).get(path, {}).get("get")
        if get is not None:
            get["responses"]["503"] = {
                "description": "Not ready",
                "content": {"application/json": {"schema": body}},
            }
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def add_examples(schema: dict[str, Any], name: str, version: int, manifest: Manifest) -> None:
    """Write working examples into the hot-path operations of a generated OpenAPI schema."""
    for path, operation in schema.get("paths", {}).items():
        post = operation.get("post")
        if post is None or not path.endswith(("/predict", "/infer")):
            continue
        example = (
            predict_example(manifest) if path.endswith("/predict") else infer_example(manifest)
        )
        content = post["requestBody"]["content"]["application/json"]
        content["example"] = example
        for parameter in post.get("parameters", []):
            if parameter["name"] == "name":
                parameter["example"] = name
            elif parameter["name"] == "version":
                parameter["example"] = str(version)
