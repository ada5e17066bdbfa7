"""The one request pipeline: resolve -> decode -> submit -> encode, telemetry recorded once.

Every protocol adapter (native REST, Open Inference Protocol REST, gRPC) hands its payload and
its codec (``service.codecs.base``) to :meth:`Pipeline.run` and sends what comes back. Nothing
here knows a protocol: the codec decodes into the one :class:`InferenceRequest` type and encodes
the one :class:`Prediction`, errors included, so every protocol answers every failure the same
way and telemetry sees every request (docs/architecture.md, "Request path").

The path is kept lean on purpose: per request it allocates the result arrays and little else,
with no pydantic and no logging.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.codecs.base import Codec, DecodeLimits
from service.errors import ModelNotFound, ModelNotReady, ProbserveError, internal_error
from service.registry import ModelRegistry
from service.request_ids import request_id_from_headers, usable_request_id
from service.telemetry.events import RequestDone, Telemetry
from service.types import Explanation, InferenceRequest, ModelHandle, Prediction

logger = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")
T = TypeVar("T")


def parse_version(name: str, version: str | None) -> int | None:
    """A URL version segment as a positive integer; anything else names no version (404)."""
    if version is None or version == "":
        return None
    if version.isascii() and version.isdigit() and int(version) > 0:
        return int(version)
    raise ModelNotFound(
        f"model {name!r} has no version {version!r}: versions are positive integers",
        model=name,
        version=version,
    )


class Pipeline:
    """Runs one request of any protocol; open between the server's start and stop."""

    def __init__(self, registry: ModelRegistry, telemetry: Telemetry, limits: DecodeLimits) -> None:
        """``telemetry`` hears of every request and every successful prediction."""
        self.registry = registry
        self.telemetry = telemetry
        self.limits = limits
        #: False before start-up finished and after shutdown began: requests get 503.
        self.open = False

    def resolve(self, name: str, version: int | None = None) -> ModelHandle:
        """The handle to infer with; ModelNotFound or ModelNotReady otherwise."""
        if not self.open:
            raise ModelNotReady("the service is starting or stopping")
        return self.registry.resolve(name, version)

    async def run(
        self,
        codec: Codec[P, Prediction, R],
        name: str,
        version: str | None,
        payload: P,
        request_id: str | None = None,
    ) -> R:
        """The reply to one request: ``request_id`` is the caller's (a header), if any."""
        return await self._serve(codec, self.predict, name, version, payload, request_id)

    async def run_explain(
        self,
        codec: Codec[P, Explanation, R],
        name: str,
        version: str | None,
        payload: P,
        request_id: str | None = None,
    ) -> R:
        """The reply to one explain request: the same steps, with the explainer for the batcher."""
        return await self._serve(codec, self.explain, name, version, payload, request_id)

    async def _serve(
        self,
        codec: Codec[P, T, R],
        compute: Callable[[ModelHandle, InferenceRequest, str, str, float], Awaitable[T]],
        name: str,
        version: str | None,
        payload: P,
        request_id: str | None,
    ) -> R:
        telemetry = self.telemetry
        endpoint = codec.endpoint
        telemetry.request_started(endpoint)
        started = time.perf_counter()
        chosen = request_id_from_headers(request_id)
        model = ""
        served: int | None = None
        status, error_type = 200, None
        try:
            handle = self.resolve(name, parse_version(name, version))
            model, served = handle.name, handle.version
            request = codec.decode(payload, handle.manifest, self.limits)
            # A body's id wins (V2 clients match answers by it) when it passes the header rule.
            chosen = usable_request_id(request.request_id) or chosen
            reply = codec.encode(await compute(handle, request, chosen, codec.protocol, started))
        except ProbserveError as exc:
            status, error_type = exc.status_code, exc.error_type
            reply = codec.error(exc, chosen)
        except Exception as exc:  # a bug: never a traceback to the caller
            err = internal_error(exc, chosen, endpoint)
            status, error_type = err.status_code, err.error_type
            reply = codec.error(err, chosen)
        telemetry.request_finished(
            RequestDone(
                endpoint,
                codec.protocol,
                model,
                served,
                status,
                time.perf_counter() - started,
                error_type,
            )
        )
        return reply

    async def predict(
        self,
        handle: ModelHandle,
        request: InferenceRequest,
        request_id: str,
        protocol: str,
        started: float,
    ) -> Prediction:
        """Probabilities, intervals, sets and labels for every row; ``started`` dates latency.

        The codecs checked the confidence level against its bounds when they decoded it.
        """
        runtime = handle.runtime
        if runtime is None:
            raise ModelNotReady(
                f"model {handle.name!r} version {handle.version} has no runtime", model=handle.name
            )
        out = await runtime.batcher.submit_timed(request.batch, request.confidence_level)
        derived = out.derived
        assert derived is not None  # the loader builds every batcher with derive
        prediction = Prediction(
            handle,
            request,
            derived,
            request_id,
            protocol,
            out.queue_wait_seconds,
            out.inference_seconds,
            time.time(),
            time.perf_counter() - started,
        )
        try:
            self.telemetry.prediction_served(prediction)
        except Exception:  # metrics or logging trouble must not fail a computed answer
            logger.exception("telemetry failed to record a prediction")
        return prediction

    async def explain(
        self,
        handle: ModelHandle,
        request: InferenceRequest,
        request_id: str,
        protocol: str,
        started: float,
    ) -> Explanation:
        """Attributions for every row, from the version's explainer (its own bounded queue)."""
        runtime = handle.runtime
        if runtime is None:
            raise ModelNotReady(
                f"model {handle.name!r} version {handle.version} has no runtime", model=handle.name
            )
        explainer = await runtime.explainer()
        outcome = await explainer.explain(request.batch, request.confidence_level)
        try:
            self.telemetry.explained(handle, request.batch.rows, outcome.duration_s)
        except Exception:  # metrics trouble must not fail a computed answer
            logger.exception("telemetry failed to record an explanation")
        return Explanation(handle, request, outcome, explainer.method, request_id)
