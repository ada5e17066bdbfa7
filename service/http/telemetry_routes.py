"""``GET /metrics`` (Prometheus) and ``POST /v1/models/{name}/feedback`` (ground truth)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from service.errors import ModelNotReady
from service.http.errors import JSON
from service.server import Server

#: Labels one feedback call may carry (a bound on the work one request can cause).
MAX_FEEDBACK_LABELS = 10_000


class FeedbackItem(BaseModel):
    """The true label of one logged prediction: which request, which instance of it."""

    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    instance: Annotated[StrictInt, Field(ge=0)]
    label: Annotated[StrictStr | StrictInt, Field(description="A class label of the model.")]


class FeedbackRequest(BaseModel):
    """``{"labels": [{"request_id": "...", "instance": 0, "label": "yes"}, ...]}``."""

    model_config = ConfigDict(extra="forbid")

    labels: Annotated[list[FeedbackItem], Field(min_length=1, max_length=MAX_FEEDBACK_LABELS)]


class FeedbackCountsBody(BaseModel):
    """How many labels were stored, matched no logged prediction, or named no class."""

    model: str
    accepted: int
    unknown: int
    invalid: int


def build_telemetry_router(server: Server) -> APIRouter:
    """The metrics scrape endpoint and the feedback endpoint."""
    router = APIRouter()

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, 404: {"description": "Metrics off"}},
    )
    async def metrics() -> Response:
        rendered = server.telemetry.render_metrics()
        if rendered is None:
            return Response(b'{"error": "metrics are off (PROBSERVE_METRICS=false)"}', 404)
        body, content_type = rendered
        return Response(body, 200, media_type=content_type)

    @router.post(
        "/v1/models/{name}/feedback",
        summary="Ground-truth labels for logged predictions",
        tags=["native"],
        response_model=FeedbackCountsBody,
        responses={
            400: {"description": "Malformed body"},
            404: {"description": "Unknown model"},
            503: {"description": "Model not loaded, or the prediction log is off"},
        },
    )
    async def feedback(name: str, body: FeedbackRequest) -> Response:
        from service.predlog import FeedbackLabel, PredictionLogError

        pipeline = server.pipeline
        pipeline.resolve(name)  # 404 unknown model, 503 not loaded
        classes: set[str] = set()
        for version in server.registry.served_versions(name):
            classes.update(pipeline.resolve(name, version).manifest.classes)
        labels = [FeedbackLabel(i.request_id, i.instance, str(i.label)) for i in body.labels]
        try:
            counts = await server.telemetry.record_feedback(name, labels, sorted(classes))
        except PredictionLogError:
            # The database is down: nothing was stored, the client may send the labels again.
            raise ModelNotReady(
                "the prediction log's database is unreachable: feedback was not stored; retry "
                "later",
                model=name,
            ) from None
        if counts is None:
            raise ModelNotReady(
                "the prediction log is off (PROBSERVE_PREDICTION_LOG_URL=none): feedback has "
                "nothing to join",
                model=name,
            )
        answer = FeedbackCountsBody(
            model=name, accepted=counts.accepted, unknown=counts.unknown, invalid=counts.invalid
        )
        return Response(answer.model_dump_json().encode(), 200, media_type=JSON)

    return router
