"""Fixtures for service tests: small bundles with random weights, written by the real writer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pandas as pd
import pytest

from service.batching import BatchingConfig, BatchObserver
from service.bundle import CategoricalFeature, Feature, NumericFeature
from service.http.app import create_app
from service.http.lean import LeanApp
from service.registry import ModelEvents, ModelRegistry
from service.runtime import resolve_providers
from service.serving import VersionLoader
from service.settings import Settings
from tests.support import free_port
from training.bundle_writer import write_bundle
from training.onnx_graph import EnsembleWeights

#: The features every test bundle has: two numerics and one categorical.
TEST_FEATURES: list[Feature] = [
    NumericFeature(name="x1", mean=0.0, std=1.0),
    NumericFeature(name="x2", mean=5.0, std=2.0),
    CategoricalFeature(name="colour", categories=["blue", "green", "red"]),
]
TEST_CLASSES = ["no", "yes", "maybe"]
ENCODED_WIDTH = 2 + 3 + 1  # two numerics, three categories plus the unknown bucket

BundleFactory = Callable[..., Path]


def make_weights(
    seed: int, members: int = 4, hidden: int = 8, classes: int = len(TEST_CLASSES)
) -> EnsembleWeights:
    """Random batched MLP weights for the test features."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(0, 0.7, size=(members, ENCODED_WIDTH, hidden)).astype(np.float32)
    b0 = rng.normal(0, 0.1, size=(members, hidden)).astype(np.float32)
    w1 = rng.normal(0, 0.7, size=(members, hidden, classes)).astype(np.float32)
    b1 = rng.normal(0, 0.1, size=(members, classes)).astype(np.float32)
    temps = np.full(members, 1.0, dtype=np.float32)
    return EnsembleWeights(layers=[(w0, b0), (w1, b1)], temperatures=temps)


def write_test_bundle(
    repository: Path,
    name: str = "toy",
    *,
    seed: int = 0,
    members: int = 4,
    reference_rows: int = 64,
) -> Path:
    """Write one random-weight bundle version of ``name`` and return its directory."""
    rng = np.random.default_rng(seed)
    sample: dict[str, list[float | str | None]] = {
        "x1": [0.1, None, -2.0, 3.5],
        "x2": [5.0, 4.0, None, 9.0],
        "colour": ["red", None, "purple", "blue"],
    }
    reference = pd.DataFrame(
        {
            "x1": rng.normal(size=reference_rows),
            "x2": rng.normal(5, 2, size=reference_rows),
            "colour": rng.choice(["blue", "green", "red"], size=reference_rows),
        }
    )
    return write_bundle(
        repository,
        name,
        features=TEST_FEATURES,
        classes=TEST_CLASSES,
        target="answer",
        weights=make_weights(seed, members=members),
        conformal_scores=np.sort(rng.uniform(0, 1, size=200)),
        metrics={"accuracy": 0.5},
        training_params={"seed": seed, "members": members},
        data_fingerprint=f"test-{seed}",
        reference=reference,
        sample_inputs=sample,
    )


@pytest.fixture
def bundle_factory(tmp_path: Path) -> BundleFactory:
    """Write bundles into a fresh repository under tmp_path: ``bundle_factory(name, seed=...)``."""
    repository = tmp_path / "models"

    def factory(name: str = "toy", *, seed: int = 0, members: int = 4) -> Path:
        return write_test_bundle(repository, name, seed=seed, members=members)

    return factory


@pytest.fixture
def bundle_repository(tmp_path: Path) -> Path:
    """A repository holding one model ``toy`` at version 1."""
    repository = tmp_path / "models"
    write_test_bundle(repository, "toy")
    return repository


# -- HTTP layer: the app in-process (httpx + lifespan) and a real uvicorn server ------------------

T = TypeVar("T")

ADMIN_TOKEN = "test-admin-token"

#: Settings the HTTP tests start from; small limits so the limit tests stay cheap.
HTTP_TEST_SETTINGS: dict[str, Any] = {
    "admin_token": ADMIN_TOKEN,
    "max_rows_per_request": 50,
    "max_request_bytes": 64 * 1024,
    "max_queue_delay_us": 200,
    # Tests that need the log give it a temporary database of their own.
    "prediction_log_url": "none",
    # In-process apps never open a gRPC port: tests start many servers at once.
    "grpc_port": 0,
}


class InProcessService:
    """The ASGI app driven by httpx in-process, lifespan included, from synchronous tests.

    The app runs on its own event loop in a thread (as under uvicorn), so the batcher's worker
    thread and futures behave as in production; each request is one coroutine on that loop.
    """

    def __init__(self, app: LeanApp) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._to_app: asyncio.Queue[dict[str, Any]] | None = None
        self._from_app: asyncio.Queue[dict[str, Any]] | None = None
        self._lifespan_task: asyncio.Task[None] | None = None
        self.client: httpx.AsyncClient | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the app's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _lifespan(self, event: str) -> None:
        if self._to_app is None:
            self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
            scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
            self._lifespan_task = asyncio.create_task(
                self.app(scope, self._to_app.get, self._from_app.put)  # type: ignore[arg-type]
            )
        assert self._from_app is not None
        await self._to_app.put({"type": f"lifespan.{event}"})
        message = await self._from_app.get()
        assert message["type"] == f"lifespan.{event}.complete", message

    def start(self) -> InProcessService:
        """Run the lifespan start-up (models load) and open the httpx client."""
        self.run(self._lifespan("startup"))
        transport = httpx.ASGITransport(app=self.app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://probserve.test")
        return self

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request through the ASGI app."""
        assert self.client is not None
        return self.run(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        """Lifespan shut-down (batchers drain), then stop the loop."""
        if self.client is not None:
            self.run(self.client.aclose())
        self.run(self._lifespan("shutdown"))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


ServiceFactory = Callable[..., InProcessService]


@pytest.fixture
def service_factory() -> Iterator[ServiceFactory]:
    """``service_factory(repository, **settings)``: a started in-process service."""
    started: list[InProcessService] = []

    def factory(repository: Path, **overrides: Any) -> InProcessService:
        settings = Settings(model_repository=repository, **{**HTTP_TEST_SETTINGS, **overrides})
        service = InProcessService(create_app(settings)).start()
        started.append(service)
        return service

    yield factory
    for service in started:
        service.close()


@pytest.fixture
def service(bundle_repository: Path, service_factory: ServiceFactory) -> InProcessService:
    """The in-process service over the one-model ``toy`` repository."""
    return service_factory(bundle_repository)


@dataclass
class LiveServer:
    """A real ``probserve serve`` process on a free loopback port."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def stop(self) -> int:
        """SIGTERM, then wait; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_live_server(repository: Path, log: Path, *args: str, **env: str) -> LiveServer:
    """Start ``python -m service.cli serve`` and wait until /readyz answers 200.

    gRPC is off unless ``args`` name a ``--grpc-port`` (its default, 8001, would be shared by
    every server a test run starts).
    """
    port = free_port()
    if "--grpc-port" not in args:
        args = (*args, "--grpc-port", "0")
    environment = {**os.environ, "PROBSERVE_ADMIN_TOKEN": ADMIN_TOKEN, **env}
    command = [
        sys.executable, "-m", "service.cli", "serve",
        "--model-repository", str(repository), "--host", "127.0.0.1", "--port", str(port),
        *args,
    ]  # fmt: skip
    # Run in the log's directory: the default prediction log (./predictions/) and its
    # spool land in the test's temporary directory, as they would in a user's working directory.
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=environment, cwd=log.parent
        )
    server = LiveServer(process, f"http://127.0.0.1:{port}", port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not ready within 60 s: {log.read_text()}")


@pytest.fixture
def live_server(bundle_repository: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """A real server over the ``toy`` repository; stopped (SIGTERM) after the test."""
    server = start_live_server(bundle_repository, tmp_path / "server.log")
    yield server
    server.stop()


def make_registry(
    repository: Path,
    *,
    version_policy: str | int = "latest",
    poll_interval_s: float = 0.0,
    events: ModelEvents | None = None,
    batch_observers: Sequence[BatchObserver] = (),
    **batching: Any,
) -> ModelRegistry:
    """A registry over ``repository`` loading on CPU; ``batching`` are BatchingConfig's."""
    loader = VersionLoader(
        resolve_providers("cpu"),
        BatchingConfig(**{"max_batch_size": 64, **batching}),
        batch_observers=tuple(batch_observers),
    )
    return ModelRegistry(
        repository,
        loader,
        version_policy=version_policy,
        poll_interval_s=poll_interval_s,
        events=events,
    )
