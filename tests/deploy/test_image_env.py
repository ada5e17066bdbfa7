"""The service image's Python environment, rebuilt here: exactly what docker/Dockerfile installs.

No Docker engine runs on these machines, so this test does what the image's builder stage does
(copy pyproject.toml, README.md, service/, training/, monitoring/; `pip install '.[cpu]'`
into a fresh virtual environment) and then runs the image's commands from that environment:
`probserve serve` answers /healthz, and `probserve train` and `probserve drift` (whose extras
live in the trainer and monitor images) each say in one line which extras to install and exit 2.
Where a Docker engine runs, tests/deploy/test_stack.py builds the real images.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.deploy.helpers import ROOT, read_dockerfile
from tests.support import free_port

#: What the builder stage copies into its build context (checked against the Dockerfile below).
SOURCES = ["pyproject.toml", "README.md", "service", "training", "monitoring"]


def _copy_sources(destination: Path) -> None:
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, destination / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(source, destination / name)


def test_sources_are_what_the_builder_stage_copies() -> None:
    builder = read_dockerfile(ROOT / "docker" / "Dockerfile").stage("builder")
    copied = [word for c in builder.all("COPY") for word in c.value.split()[:-1]]
    assert sorted(copied) == sorted(SOURCES)


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with `pip install '.[cpu]'`; returns its bin directory."""
    base = tmp_path_factory.mktemp("image")
    source = base / "src"
    source.mkdir()
    _copy_sources(source)
    venv = base / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    result = subprocess.run(
        # --no-compile: the same packages, without byte-compiling them (half the install time
        # on a busy 2-core machine; the image compiles them, which changes nothing tested here).
        [*pip, "install", "--no-compile", ".[cpu]"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # Reported, never asserted: pip's cache makes a second run much faster than the first.
    print(f"\nimage environment installed in {time.monotonic() - started:.1f} s")
    return venv / "bin"


@pytest.mark.slow
def test_image_env_holds_only_what_serve_needs(image_env: Path) -> None:
    heavy = ("torch", "matplotlib", "evidently", "sklearn", "pandas", "scipy")
    code = (
        "import importlib.util as u; "
        f"print(' '.join(m for m in ('onnxruntime', 'pyarrow') + {heavy!r} if u.find_spec(m)))"
    )
    found = subprocess.run(
        [str(image_env / "python"), "-c", code], capture_output=True, text=True, timeout=60
    )
    # pyarrow is the prediction log's (Arrow batches, Parquet segments); the rest is not serve's.
    assert found.stdout.split() == ["onnxruntime", "pyarrow"], found.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "extras"),
    [
        (["train", "--data", "breast_cancer", "--name", "demo"], "probserve[cpu,data,train]"),
        (["drift", "run", "--model", "demo"], "probserve[data,drift]"),
    ],
)
def test_commands_of_other_images_name_their_extras(
    image_env: Path, tmp_path: Path, argv: list[str], extras: str
) -> None:
    result = subprocess.run(
        [str(image_env / "probserve"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "DO_NOT_TRACK": "1"},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"'probserve {argv[0]}' needs the Python package" in lines[0]
    assert extras in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_serve_answers_healthz_and_readyz(image_env: Path, tmp_path: Path) -> None:
    from tests.service.conftest import write_test_bundle

    repository = tmp_path / "models"
    write_test_bundle(repository, "toy")
    port = free_port()
    log = tmp_path / "serve.log"
    # The image's environment: host and model repository from PROBSERVE_*, the rest defaults.
    env = {
        **os.environ,
        "PROBSERVE_HOST": "127.0.0.1",
        "PROBSERVE_PORT": str(port),
        "PROBSERVE_MODEL_REPOSITORY": str(repository),
        # A free port for gRPC too: its default (8001) may be any other server's.
        "PROBSERVE_GRPC_PORT": str(free_port()),
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(image_env / "probserve"), "serve"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 60
        answers: dict[str, int] = {}
        while time.monotonic() < deadline and process.poll() is None:
            try:
                for path in ["/healthz", "/readyz"]:
                    answers[path] = httpx.get(
                        f"http://127.0.0.1:{port}{path}", timeout=2
                    ).status_code
                if answers == {"/healthz": 200, "/readyz": 200}:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert answers == {"/healthz": 200, "/readyz": 200}, log.read_text()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    assert process.returncode == 0, log.read_text()
