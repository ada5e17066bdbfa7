"""The composition root: one place that builds a serving process from its settings.

``probserve serve``, every ``--workers`` process and the tests build a :class:`Server` here and
nowhere else: settings -> telemetry -> batching -> version loader -> registry -> pipeline. The
protocol fronts (the HTTP app, the gRPC server) are thin adapters over its pipeline; start()
and stop() are the process's lifecycle (MLServer's ``mlserver/server.py`` has the same shape).
"""

from __future__ import annotations

import hmac
import logging

from service.codecs.base import DecodeLimits
from service.errors import Forbidden, ModelNotReady, Unauthorized
from service.http.connections import ConnectionCounters
from service.pipeline import Pipeline
from service.registry import ModelRegistry
from service.runtime import resolve_providers
from service.serving import VersionLoader
from service.settings import Settings
from service.telemetry import Telemetry

logger = logging.getLogger("probserve.server")


class Server:
    """Settings, telemetry, registry and pipeline of one process; nothing loads before start()."""

    def __init__(self, settings: Settings, telemetry: Telemetry | None = None) -> None:
        """Telemetry is built from the settings unless given (tests pass their own to watch).

        A bad ``providers`` value (an explicit CUDA request that cannot start) raises here, so
        the process fails before serving on the wrong device.
        """
        self.settings = settings
        #: What the HTTP protocol counts below the app (requests held, connection faults).
        self.connections = ConnectionCounters()
        if telemetry is None:
            from service.telemetry.build import build_telemetry

            telemetry = build_telemetry(settings, self.connections)
        self.telemetry = telemetry
        loader = VersionLoader(
            resolve_providers(settings.providers),
            settings.batching(),
            intra_op_threads=settings.intra_op_threads,
            batch_observers=(telemetry.batch_ran,),
            shed_observers=(telemetry.requests_shed,),
            requests=self.connections,
            explain=settings.explainer(),
        )
        self.registry = ModelRegistry(
            settings.model_repository,
            loader,
            version_policy=settings.version_policy,
            poll_interval_s=settings.poll_interval_s,
            events=telemetry,
        )
        self.pipeline = Pipeline(
            self.registry,
            telemetry,
            DecodeLimits(settings.max_rows_per_request, settings.confidence_level),
        )

    async def start(self) -> None:
        """Open the prediction log, load every model, then let requests in."""
        await self.telemetry.start()  # first, so the first prediction has somewhere to go
        await self.registry.start()
        self.pipeline.open = True
        index = self.registry.index()
        logger.info(
            "serving %d model version(s) from %s; ready=%s",
            sum(1 for row in index if row.state == "READY"),
            self.settings.model_repository,
            self.ready(),
        )

    async def stop(self) -> None:
        """Refuse new requests, drain the batchers, then the log: nothing served is lost."""
        self.pipeline.open = False
        await self.registry.stop()
        await self.telemetry.stop()

    def models(self) -> ModelRegistry:
        """The registry while requests are let in; ModelNotReady (503) before or after."""
        if not self.pipeline.open:
            raise ModelNotReady("the service is starting or stopping")
        return self.registry

    def ready(self) -> bool:
        """Ready under the ``readiness`` setting (every model loaded, or any)."""
        return self.pipeline.open and self.registry.ready(self.settings.readiness)

    def authorize(self, authorization: str | None) -> None:
        """Model control: off (403) without a configured token, 401 without the right one."""
        token = self.settings.admin_token_value()
        if token is None:
            raise Forbidden(
                "model control is disabled: set PROBSERVE_ADMIN_TOKEN (or --admin-token) to "
                "enable it"
            )
        scheme, _, given = (authorization or "").partition(" ")
        # compare_digest: the time taken must not reveal how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise Unauthorized("model control needs 'Authorization: Bearer <admin token>'")
