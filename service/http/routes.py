"""The FastAPI app behind the lean front: metadata, health, model control, and documentation.

The predict/infer routes are not routes here: the lean front serves them through the request
pipeline, and the OpenAPI document describes them (service/http/docs.py, ``hot_paths``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline

from service.codecs.examples import predict_example
from service.codecs.v2 import model_metadata
from service.http import docs
from service.http.answer import Answer
from service.http.codecs import EXPLAIN
from service.http.errors import JSON, install_error_handlers
from service.http.public import public_reason
from service.http.telemetry_routes import build_telemetry_router
from service.metadata import list_models, model_info
from service.pipeline import parse_version
from service.registry import ModelRegistry
from service.server import Server
from service.types import IndexEntry, ModelSummary
from service.version import __version__

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

#: Where the Swagger UI and ReDoc scripts are served from.
DOCS_ASSETS = "/docs-assets"


def json_response(body: Any, status: int = 200) -> Response:
    """An orjson-serialised response."""
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def build_fastapi(server: Server, lifespan: Lifespan) -> FastAPI:
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
    app.include_router(_health_routes(server))
    app.include_router(_v1_routes(server))
    app.include_router(_v2_routes(server))
    app.include_router(_control_routes(server))
    app.include_router(build_telemetry_router(server))
    _document_with_examples(app, server)
    return app


def _health_routes(server: Server) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process serves HTTP")
    async def healthz() -> Response:
        return json_response({"status": "alive"})

    @router.get("/readyz", summary="Readiness: models serve (all of them, or any: a setting)")
    async def readyz() -> Response:
        if server.ready():
            return json_response({"status": "ready"})
        # Public: names, versions, states and reasons, never paths (the index needs the token).
        open_ = server.pipeline.open
        rows = [_public_row(r) for r in server.registry.index()] if open_ else []
        return json_response({"status": "not ready", "models": rows}, 503)

    @router.get("/v2/health/live", summary="V2 server live")
    async def v2_live() -> Response:
        return json_response({"live": True})

    @router.get("/v2/health/ready", summary="V2 server ready")
    async def v2_ready() -> Response:
        is_up = server.ready()
        return json_response({"ready": is_up}, 200 if is_up else 503)

    return router


def _public_row(row: IndexEntry) -> dict[str, str]:
    """An index row for an unauthenticated answer: the reason without paths or digests."""
    public = row.as_triton()
    public["reason"] = public_reason(public["reason"])
    return public


def _model_entry(registry: ModelRegistry, summary: ModelSummary) -> dict[str, Any]:
    """A list entry: the summary, plus the full metadata when a version serves."""
    entry: dict[str, Any] = asdict(summary)
    entry["reason"] = public_reason(summary.reason)
    if summary.default_version is not None:
        entry.update(asdict(model_info(registry, summary.name)))
    return entry


def _v1_routes(server: Server) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["native"])
    pipeline = server.pipeline

    @router.get("/models", summary="Models, their versions, features, classes and metrics")
    async def get_models() -> Response:
        registry = server.models()
        models = [_model_entry(registry, summary) for summary in list_models(registry)]
        return json_response({"models": models})

    @router.get("/models/{name}", summary="One model: versions, features, classes, metrics")
    async def get_model(name: str) -> Response:
        handle = pipeline.resolve(name)
        info = model_info(server.registry, name, handle.version)
        # A request body that works against this model: copy it, change the values, send it.
        return json_response({**asdict(info), "example": predict_example(handle.manifest)})

    async def explain(request: Request, name: str, version: str | None) -> Response:
        # The lean front read the body under the size limit before handing the request on.
        body = await request.body()
        header_id = request.headers.get("x-request-id")
        return _send(await pipeline.run_explain(EXPLAIN, name, version, body, header_id))

    extra = docs.request_body(docs.PREDICT_REQUEST_SCHEMA)
    answers = docs.responses(docs.EXPLAIN_RESPONSE_SCHEMA)
    about = (
        "Interventional Shapley values of the served probability of every class, per feature, "
        "each with an interval from the ensemble members' spread at the confidence level; "
        "exact up to 10 features, sampled above. Runs in its own bounded queue (503 when full)."
    )

    @router.post(
        "/models/{name}/explain",
        summary="Explain predictions of the newest version",
        description=about,
        openapi_extra=extra,
        responses=answers,
    )
    async def explain_latest(request: Request, name: str) -> Response:
        return await explain(request, name, None)

    @router.post(
        "/models/{name}:explain",
        summary="Explain predictions (KServe V1 path)",
        description=about,
        openapi_extra=extra,
        responses=answers,
    )
    async def explain_kserve(request: Request, name: str) -> Response:
        return await explain(request, name, None)

    @router.post(
        "/models/{name}/versions/{version}/explain",
        summary="Explain predictions of one version",
        description=about,
        openapi_extra=extra,
        responses=answers,
    )
    async def explain_version(request: Request, name: str, version: str) -> Response:
        return await explain(request, name, version)

    return router


def _send(answer: Answer) -> Response:
    headers = {k.decode(): v.decode() for k, v in answer.extra_headers}
    headers["x-request-id"] = answer.request_id
    return Response(answer.body, answer.status, headers=headers, media_type=answer.content_type)


def _v2_routes(server: Server) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
    pipeline = server.pipeline

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
        handle = pipeline.resolve(name, parse_version(name, version))
        return json_response(model_metadata(handle, server.registry.served_versions(name)))

    @router.get("/models/{name}", summary="V2 model metadata")
    async def model_meta(name: str) -> Response:
        return metadata(name, None)

    @router.get("/models/{name}/versions/{version}", summary="V2 model version metadata")
    async def model_version_meta(name: str, version: str) -> Response:
        return metadata(name, version)

    def model_ready(name: str, version: str | None) -> Response:
        pipeline.resolve(name, parse_version(name, version))  # 404 / 503 with the reason
        return json_response({"name": name, "ready": True})

    @router.get("/models/{name}/ready", summary="V2 model ready")
    async def ready(name: str) -> Response:
        return model_ready(name, None)

    @router.get("/models/{name}/versions/{version}/ready", summary="V2 model version ready")
    async def version_ready(name: str, version: str) -> Response:
        return model_ready(name, version)

    return router


def _control_routes(server: Server) -> APIRouter:
    router = APIRouter(prefix="/v2/repository", tags=["model control (bearer token)"])

    @router.post("/index", summary="Every model version on disk with its state")
    async def index(authorization: str | None = Header(default=None)) -> Response:
        server.authorize(authorization)
        return json_response([row.as_triton() for row in server.models().index()])

    @router.post("/models/{name}/load", summary="Load or reload a model (verified, warmed up)")
    async def load(name: str, authorization: str | None = Header(default=None)) -> Response:
        server.authorize(authorization)
        await server.models().load(name)
        return json_response({})

    @router.post("/models/{name}/unload", summary="Stop serving a model (drained)")
    async def unload(name: str, authorization: str | None = Header(default=None)) -> Response:
        server.authorize(authorization)
        await server.models().unload(name)
        return json_response({})

    return router


def _document_with_examples(app: FastAPI, server: Server) -> None:
    """Generate /openapi.json once models serve, with examples that work against them."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema.setdefault("paths", {}).update(docs.hot_paths())
        docs.document_errors(schema)
        summaries = list_models(server.registry) if server.pipeline.open else []
        for summary in summaries:
            if summary.default_version is not None:
                handle = server.registry.resolve(summary.name)
                docs.add_examples(schema, summary.name, handle.version, handle.manifest)
                app.openapi_schema = schema  # cache only once the examples are real
                break
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
