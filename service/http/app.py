"""The app factory: ``create_app(settings)`` returns the ASGI app uvicorn runs.

Nothing is built at import time. The process comes from the composition root
(``service.server.Server``); the lifespan loads every model before the server reports ready,
and on shutdown (uvicorn's graceful shutdown on SIGTERM: stop accepting, let in-flight requests
finish) drains the batchers and the prediction log before the process exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.http.lean import LeanApp
from service.http.routes import build_fastapi
from service.server import Server
from service.settings import Settings
from service.telemetry import Telemetry


def create_app(settings: Settings | None = None, *, telemetry: Telemetry | None = None) -> LeanApp:
    """Build the service. Without ``settings``, read them from ``PROBSERVE_*``.

    Telemetry (metrics, prediction log) is built from the settings unless ``telemetry`` is given
    (tests pass their own to watch every event).
    """
    return create_app_for(Server(settings if settings is not None else Settings(), telemetry))


def create_app_for(server: Server) -> LeanApp:
    """The HTTP front of ``server``; its lifespan starts and stops the server."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            async with grpc_front(server):
                yield
        finally:
            await server.stop()

    return LeanApp(server, build_fastapi(server, lifespan))


@asynccontextmanager
async def grpc_front(server: Server) -> AsyncIterator[None]:
    """The gRPC front while the body runs, when ``grpc_port`` is set; stopped with grace."""
    settings = server.settings
    if not settings.grpc_port:
        yield
        return
    # Imported only when on: the generated messages claim protobuf's `inference` package
    # (service/grpc/__init__.py).
    from service.grpc.server import start_grpc, stop_grpc

    front = await start_grpc(server)
    try:
        yield
    finally:
        await stop_grpc(front, settings.graceful_shutdown_s)


def create_app_from_env() -> LeanApp:
    """uvicorn factory for ``--workers N``: each worker reads ``PROBSERVE_*`` and sets up logs."""
    from service.logging_setup import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
