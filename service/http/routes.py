"""The FastAPI app behind the lean front: metadata, health, model control, and documentation.

The predict/infer routes are declared here too, calling the same handlers as the lean front, so
/openapi.json describes them and the FastAPI app alone answers them identically (the lean front
only takes them over for speed).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline

from service.codecs.examples import predict_example
from service.codecs.v2 import model_metadata
from service.dataplane import DataPlane
from service.http import docs
from service.http.errors import JSON, install_error_handlers
from service.http.handlers import (
    Answer,
    infer_v2,
    parse_version,
    predict_v1,
    read_limited,
    too_large,
)
from service.http.ids import request_id_from_headers
from service.http.public import public_reason
from service.http.state import ServiceState
from service.http.telemetry_routes import build_telemetry_router
from service.types import IndexEntry, ModelSummary

try:
    __version__ = version("probserve")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

#: Where the Swagger UI and ReDoc scripts are served from.
DOCS_ASSETS = "/docs-assets"


def json_response(body: Any, status: int = 200) -> Response:
    """An orjson-serialised response."""
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def build_fastapi(state: ServiceState, lifespan: Lifespan) -> FastAPI:
    """The documented app: every route of the service, errors in one JSON shape."""
    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from this server (the package
    # ships them), not from a CDN, so the docs work offline and behind strict firewalls.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="probserve",
        version=__version__,
        description=(
            "Deep-ensemble classifiers with calibrated probabilities, confidence intervals and "
            "conformal prediction sets. Native API under /v1, Open Inference Protocol "
            "(KServe V2 / Triton REST) under /v2."
        ),
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(_health_routes(state))
    app.include_router(_v1_routes(state))
    app.include_router(_v2_routes(state))
    app.include_router(_control_routes(state))
    app.include_router(build_telemetry_router(state))
    _document_with_examples(app, state)
    return app


async def _body(request: Request, state: ServiceState, *, v2: bool) -> bytes | Answer:
    limit = state.settings.max_request_bytes
    request_id = request_id_from_headers(request.headers.get("x-request-id"))
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return too_large(limit, request_id, v2=v2)
    body = await read_limited(request.stream(), limit)
    return too_large(limit, request_id, v2=v2) if body is None else body


def _send(answer: Answer) -> Response:
    headers = {k.decode(): v.decode() for k, v in answer.extra_headers}
    headers["x-request-id"] = answer.request_id
    return Response(answer.body, answer.status, headers=headers, media_type=answer.content_type)


def _health_routes(state: ServiceState) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process serves HTTP")
    async def healthz() -> Response:
        return json_response({"status": "alive"})

    @router.get("/readyz", summary="Readiness: models serve (all of them, or any: a setting)")
    async def readyz() -> Response:
        if state.ready():
            return json_response({"status": "ready"})
        dataplane = state.dataplane_
        # Public: names, versions, states and reasons, never paths (the index needs the token).
        rows = [] if dataplane is None else [_public_row(r) for r in dataplane.index()]
        return json_response({"status": "not ready", "models": rows}, 503)

    @router.get("/v2/health/live", summary="V2 server live")
    async def v2_live() -> Response:
        return json_response({"live": True})

    @router.get("/v2/health/ready", summary="V2 server ready")
    async def v2_ready() -> Response:
        is_up = state.ready()
        return json_response({"ready": is_up}, 200 if is_up else 503)

    return router


def _public_row(row: IndexEntry) -> dict[str, str]:
    """An index row for an unauthenticated answer: the reason without paths or digests."""
    public = row.as_triton()
    public["reason"] = public_reason(public["reason"])
    return public


def _model_entry(dataplane: DataPlane, summary: ModelSummary) -> dict[str, Any]:
    """A list entry: the summary, plus the full metadata when a version serves."""
    entry: dict[str, Any] = asdict(summary)
    entry["reason"] = public_reason(summary.reason)
    if summary.default_version is not None:
        entry.update(asdict(dataplane.model_info(summary.name)))
    return entry


def _v1_routes(state: ServiceState) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["native"])

    @router.get("/models", summary="Models, their versions, features, classes and metrics")
    async def list_models() -> Response:
        dataplane = state.dataplane
        models = [_model_entry(dataplane, summary) for summary in dataplane.list_models()]
        return json_response({"models": models})

    @router.get("/models/{name}", summary="One model: versions, features, classes, metrics")
    async def get_model(name: str) -> Response:
        dataplane = state.dataplane
        info = dataplane.model_info(name)
        manifest = dataplane.resolve(name, info.version).manifest
        # A request body that works against this model: copy it, change the values, send it.
        return json_response({**asdict(info), "example": predict_example(manifest)})

    async def predict(request: Request, name: str, version: str | None) -> Response:
        body = await _body(request, state, v2=False)
        if isinstance(body, Answer):
            return _send(body)
        header_id = request.headers.get("x-request-id")
        return _send(await predict_v1(state, name, version, body, header_id))

    extra = docs.request_body(docs.PREDICT_REQUEST_SCHEMA)
    answers = docs.responses(docs.PREDICT_RESPONSE_SCHEMA)

    @router.post(
        "/models/{name}/predict",
        summary="Predict with the newest version",
        openapi_extra=extra,
        responses=answers,
    )
    async def predict_latest(request: Request, name: str) -> Response:
        return await predict(request, name, None)

    @router.post(
        "/models/{name}/versions/{version}/predict",
        summary="Predict with one version",
        openapi_extra=extra,
        responses=answers,
    )
    async def predict_version(request: Request, name: str, version: str) -> Response:
        return await predict(request, name, version)

    return router


def _v2_routes(state: ServiceState) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

    @router.get("", summary="V2 server metadata")
    async def server_metadata() -> Response:
        return json_response(
            {
                "name": "probserve",
                "version": __version__,
                "extensions": ["model_repository", "binary_tensor_data"],
            }
        )

    def metadata(name: str, version: str | None) -> Response:
        dataplane = state.dataplane
        handle = dataplane.resolve(name, parse_version(name, version))
        return json_response(model_metadata(handle, dataplane.registry.served_versions(name)))

    @router.get("/models/{name}", summary="V2 model metadata")
    async def model_meta(name: str) -> Response:
        return metadata(name, None)

    @router.get("/models/{name}/versions/{version}", summary="V2 model version metadata")
    async def model_version_meta(name: str, version: str) -> Response:
        return metadata(name, version)

    def model_ready(name: str, version: str | None) -> Response:
        state.dataplane.resolve(name, parse_version(name, version))  # 404 / 503 with the reason
        return json_response({"name": name, "ready": True})

    @router.get("/models/{name}/ready", summary="V2 model ready")
    async def ready(name: str) -> Response:
        return model_ready(name, None)

    @router.get("/models/{name}/versions/{version}/ready", summary="V2 model version ready")
    async def version_ready(name: str, version: str) -> Response:
        return model_ready(name, version)

    async def infer(request: Request, name: str, version: str | None) -> Response:
        body = await _body(request, state, v2=True)
        if isinstance(body, Answer):
            return _send(body)
        headers = request.headers
        answer = await infer_v2(
            state,
            name,
            version,
            body,
            headers.get("x-request-id"),
            headers.get("inference-header-content-length"),
        )
        return _send(answer)

    extra = docs.request_body(docs.INFER_REQUEST_SCHEMA)
    answers = docs.responses(docs.INFER_RESPONSE_SCHEMA)

    @router.post(
        "/models/{name}/infer", summary="V2 inference", openapi_extra=extra, responses=answers
    )
    async def infer_latest(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @router.post(
        "/models/{name}/versions/{version}/infer",
        summary="V2 inference with one version",
        openapi_extra=extra,
        responses=answers,
    )
    async def infer_version(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    return router


def _control_routes(state: ServiceState) -> APIRouter:
    router = APIRouter(prefix="/v2/repository", tags=["model control (bearer token)"])

    @router.post("/index", summary="Every model version on disk with its state")
    async def index(authorization: str | None = Header(default=None)) -> Response:
        state.authorize(authorization)
        return json_response([row.as_triton() for row in state.dataplane.index()])

    @router.post("/models/{name}/load", summary="Load or reload a model (verified, warmed up)")
    async def load(name: str, authorization: str | None = Header(default=None)) -> Response:
        state.authorize(authorization)
        await state.dataplane.load(name)
        return json_response({})

    @router.post("/models/{name}/unload", summary="Stop serving a model (drained)")
    async def unload(name: str, authorization: str | None = Header(default=None)) -> Response:
        state.authorize(authorization)
        await state.dataplane.unload(name)
        return json_response({})

    return router


def _document_with_examples(app: FastAPI, state: ServiceState) -> None:
    """Generate /openapi.json once models serve, with examples that work against them."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        docs.document_errors(schema)
        dataplane = state.dataplane_
        summaries = [] if dataplane is None else dataplane.list_models()
        for summary in summaries:
            if dataplane is not None and summary.default_version is not None:
                handle = dataplane.resolve(summary.name)
                docs.add_examples(schema, summary.name, handle.version, handle.manifest)
                app.openapi_schema = schema  # cache only once the examples are real
                break
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
