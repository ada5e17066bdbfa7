"""What the HTTP layer shares between the lean front, the FastAPI routes and the lifespan.

Created empty by :func:`service.http.create_app`; the lifespan fills in the registry and the data
plane and clears them on shutdown. Nothing here exists at import time.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field

from service.dataplane import DataPlane
from service.errors import Forbidden, ModelNotReady, Unauthorized
from service.registry import ModelRegistry
from service.runtime import resolve_providers
from service.serving import VersionLoader
from service.settings import Settings
from service.telemetry import Telemetry

logger = logging.getLogger("probserve.http")


@dataclass
class ServiceState:
    """Per-app state; one per :func:`create_app` call."""

    settings: Settings
    telemetry: Telemetry = field(default_factory=Telemetry)
    dataplane_: DataPlane | None = None

    @property
    def dataplane(self) -> DataPlane:
        """The running data plane (503 before start-up finished or after shutdown began)."""
        if self.dataplane_ is None:
            raise ModelNotReady("the service is starting or stopping")
        return self.dataplane_

    async def start(self) -> None:
        """Build the registry and the data plane and load every model before serving.

        A bad ``providers`` value (an explicit CUDA request that cannot start) raises here, so
        the process fails at start-up instead of serving on the wrong device.
        """
        s = self.settings
        loader = VersionLoader(
            resolve_providers(s.providers),
            intra_op_threads=s.intra_op_threads,
            max_batch_size=s.max_batch_size,
            max_queue_delay_us=s.max_queue_delay_us,
            max_queued_rows=s.max_queued_rows,
            max_queue_wait_s=s.max_queue_wait_s or None,
            batch_observers=(self.telemetry.batch_ran,),
            inline_max_us=s.inline_max_us,
        )
        registry = ModelRegistry(
            s.model_repository,
            loader,
            version_policy=s.version_policy,
            poll_interval_s=s.poll_interval_s,
            events=self.telemetry,
        )
        # The log opens first, so the first prediction has somewhere to go.
        await self.telemetry.start()
        dataplane = DataPlane(registry, self.telemetry)
        await dataplane.start()
        self.dataplane_ = dataplane
        index = registry.index()
        logger.info(
            "serving %d model version(s) from %s with %s; ready=%s",
            sum(1 for row in index if row.state == "READY"),
            s.model_repository,
            loader.providers.primary,
            dataplane.ready(s.readiness),
        )

    async def stop(self) -> None:
        """Drain the batchers, then the prediction log: nothing served is lost on SIGTERM."""
        dataplane, self.dataplane_ = self.dataplane_, None
        if dataplane is not None:
            await dataplane.stop()
        await self.telemetry.stop()

    def ready(self) -> bool:
        """Ready under the ``readiness`` setting (every model loaded, or any)."""
        return self.dataplane_ is not None and self.dataplane_.ready(self.settings.readiness)

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
