"""A real ``probserve serve`` process: predictions over TCP, JSON logs, workers, SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import LiveServer, start_live_server

pytestmark = pytest.mark.slow

BODY = {"instances": [{"x1": 0.3, "x2": 4.0, "colour": "red"}]}


def test_real_server_predicts_and_logs_json_lines(bundle_repository: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = start_live_server(bundle_repository, log, "--log-format", "json")
    try:
        with httpx.Client(base_url=server.url) as client:
            for path in ("/v1/models/toy/predict", "/v1/models/toy/versions/1/predict"):
                response = client.post(path, json=BODY)
                assert response.status_code == 200, response.text
                assert response.json()["predictions"][0]["label"] in {"no", "yes", "maybe"}
            bad = client.post("/v1/models/toy/predict", content=b"{")
            assert bad.status_code == 400
            assert client.post("/v1/models/toy/predict", json=BODY).status_code == 200
    finally:
        assert server.stop() == 0
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert records, "the server logged nothing"
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any("loaded model toy" in r["message"] for r in records)


def test_sigterm_lets_the_request_in_flight_finish(bundle_repository: Path, tmp_path: Path) -> None:
    # A one-second batching delay holds a lone request in the batcher: SIGTERM arrives while it
    # is in flight, and it must still be answered before the process exits 0.
    server = start_live_server(
        bundle_repository, tmp_path / "server.log", "--max-queue-delay-us", "1000000"
    )
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["response"] = httpx.post(
                server.url + "/v1/models/toy/predict", json=BODY, timeout=30
            )
        except Exception as exc:  # reported by the assertions below
            outcome["error"] = exc

    worker = threading.Thread(target=send)
    worker.start()
    time.sleep(0.4)
    assert worker.is_alive(), "the request finished before the signal: the test proves nothing"
    server.process.send_signal(signal.SIGTERM)
    worker.join(30)
    assert server.process.wait(30) == 0, (tmp_path / "server.log").read_text()
    assert "error" not in outcome, outcome.get("error")
    response = outcome["response"]
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_workers_serve_and_stop_cleanly(bundle_repository: Path, tmp_path: Path) -> None:
    server: LiveServer = start_live_server(
        bundle_repository, tmp_path / "server.log", "--workers", "2"
    )
    try:
        with httpx.Client(base_url=server.url) as client:
            for _ in range(8):
                assert client.post("/v1/models/toy/predict", json=BODY).status_code == 200
    finally:
        assert server.stop() == 0


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_taken_port_is_a_one_line_usage_error(bundle_repository: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = _serve("--model-repository", str(bundle_repository), "--port", str(port))
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the server could not start on 127.0.0.1:{port}")
    assert "Traceback" not in out.stderr


def test_a_repository_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "models"
    not_a_dir.write_text("")
    out = _serve("--model-repository", str(not_a_dir), "--port", "0")
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: model repository {not_a_dir} is a file")
    )


def test_a_serving_process_maps_no_scipy_pandas_arrow_dataset_or_torch(
    live_server: LiveServer,
) -> None:
    # Start-up budget: at most 200 MiB and ready within 1 s of the server's own CPU time. The
    # Student t quantile is solved in service.uncertainty, because importing scipy.special was a
    # third of start-up. Predictions at two levels run the whole uncertainty step first; an
    # imported package's compiled libraries then show in the process's memory map.
    maps = Path(f"/proc/{live_server.process.pid}/maps")
    if not maps.exists():
        pytest.skip("needs /proc (Linux)")
    with httpx.Client(base_url=live_server.url) as client:
        for level in (0.95, 0.8):
            response = client.post(
                "/v1/models/toy/predict", json={**BODY, "confidence_level": level}
            )
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["intervals"], response.text
    mapped = maps.read_text()
    heavy = sorted(p for p in ("scipy", "pandas", "torch") if f"/{p}/" in mapped)
    assert heavy == [], heavy
    # pyarrow writes the log; its Python dataset layer (pyarrow.dataset, about 55 MiB of RSS) is
    # the readers' alone (libparquet links the C++ library, which costs little until used).
    assert "/pyarrow/_dataset.cpython" not in mapped and "/pyarrow/" in mapped
