"""The app factory: ``create_app(settings)`` returns the ASGI app uvicorn runs.

Nothing is built at import time. The lifespan loads every model before the server reports
ready, and on shutdown (uvicorn's graceful shutdown on SIGTERM: stop accepting, let in-flight
requests finish) drains the batchers before the process exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.batching import BatchObserver
from service.dataplane import PredictionObserver
from service.http.hooks import RequestHooks
from service.http.lean import LeanApp
from service.http.routes import build_fastapi
from service.http.state import ServiceState
from service.settings import Settings


def create_app(
    settings: Settings | None = None,
    *,
    hooks: RequestHooks | None = None,
    observers: Sequence[PredictionObserver] = (),
    batch_observers: Sequence[BatchObserver] = (),
) -> LeanApp:
    """Build the service. Without ``settings``, read them from ``PROBSERVE_*`` (uvicorn factory).

    The three hook points for metrics and the prediction log: ``hooks`` sees every hot-path
    request, ``observers`` every successful prediction, ``batch_observers`` every ONNX call.
    """
    state = ServiceState(
        settings=settings if settings is not None else Settings(),
        hooks=hooks if hooks is not None else RequestHooks(),
        observers=observers,
        batch_observers=batch_observers,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    return LeanApp(state, build_fastapi(state, lifespan))


def create_app_from_env() -> LeanApp:
    """uvicorn factory for ``--workers N``: each worker reads ``PROBSERVE_*`` and sets up logs."""
    from service.logging_setup import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
