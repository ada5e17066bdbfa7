"""The compose stack's evidently-ui service: its exact command line starts Evidently's UI.

Run from this environment's Evidently (the version the drift extra pins, as in the image), with
only the container paths and the address swapped for temporary ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.deploy.helpers import as_list, load_compose
from tests.support import free_port


@pytest.mark.slow
def test_compose_evidently_ui_command_serves_the_workspace(tmp_path: Path) -> None:
    service = load_compose()["services"]["evidently-ui"]
    argv = as_list(service["entrypoint"]) + as_list(service["command"])
    assert argv[:2] == ["evidently", "ui"]
    port = free_port()
    swap = {"/drift/workspace": str(tmp_path / "workspace"), "0.0.0.0": "127.0.0.1"}
    swap["8000"] = str(port)
    argv = [swap.get(word, word) for word in argv]
    assert argv.count(str(port)) == 1 and str(tmp_path / "workspace") in argv
    executable = str(Path(sys.executable).parent / "evidently")
    log = tmp_path / "ui.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [executable, *argv[1:]],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DO_NOT_TRACK": "1"},
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/api/projects", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert status is not None, log.read_text()
        assert status.status_code == 200 and status.json() == [], log.read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
