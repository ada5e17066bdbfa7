"""The gRPC front's life in the process: beside --workers, alone on its port, drained on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio
from pydantic import ValidationError

from service.settings import Settings
from tests.service.conftest import write_test_bundle
from tests.service.grpc_support import grpc_inputs, start_grpc_server
from tests.support import free_port

pytestmark = pytest.mark.slow


def test_grpc_and_http_cannot_share_a_port() -> None:
    with pytest.raises(ValidationError, match="grpc_port and port are both 8000"):
        Settings(port=8000, grpc_port=8000)
    assert Settings(port=8000, grpc_port=0).grpc_port == 0


def test_every_worker_serves_grpc_on_the_one_port(tmp_path: Path) -> None:
    write_test_bundle(tmp_path / "models", "toy")
    server = start_grpc_server(tmp_path / "models", tmp_path / "server.log", "--workers", "2")
    try:
        # New channels land on either worker (SO_REUSEPORT): every one is answered.
        for _ in range(6):
            result = server.client().infer("toy", grpc_inputs())
            assert result.as_numpy("probabilities").shape == (3, 3)
    finally:
        assert server.stop() == 0
    assert server.live.log.read_text().count("gRPC (Open Inference Protocol) on") == 2


def test_one_process_never_shares_its_grpc_port(tmp_path: Path) -> None:
    write_test_bundle(tmp_path / "models", "toy")
    first = start_grpc_server(tmp_path / "models", tmp_path / "first.log")
    try:
        taken = first.address.rsplit(":", 1)[1]
        second = subprocess.run(
            [
                sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1",
                "--model-repository", str(tmp_path / "models"), "--port", str(free_port()),
                "--grpc-port", taken, "--prediction-log-url", "none",
            ],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        )  # fmt: skip
    finally:
        assert first.stop() == 0
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith("error: the server could not start")
    assert f"the gRPC server could not bind 127.0.0.1:{taken}" in second.stderr


def test_sigterm_lets_a_grpc_call_in_flight_finish(tmp_path: Path) -> None:
    write_test_bundle(tmp_path / "models", "toy")
    # Each call waits 0.5 s for a batch: SIGTERM arrives while it waits.
    server = start_grpc_server(
        tmp_path / "models", tmp_path / "server.log",
        "--max-queue-delay-us", "500000", "--inline-max-us", "0",
    )  # fmt: skip

    async def call_then_sigterm() -> np.ndarray:
        client = triton_aio.InferenceServerClient(server.address)
        try:
            call = asyncio.ensure_future(client.infer("toy", grpc_inputs()))
            await asyncio.sleep(0.2)
            server.live.process.send_signal(signal.SIGTERM)
            result = await call
            probabilities: np.ndarray = result.as_numpy("probabilities")
            return probabilities
        finally:
            await client.close()

    started = time.monotonic()
    probabilities = asyncio.run(call_then_sigterm())
    assert probabilities.shape == (3, 3)
    assert server.live.process.wait(30) == 0
    assert time.monotonic() - started < 30
