"""The servers `probserve bench` compares: how to start each and what to send it.

All serve the same ONNX file on loopback and are pinned to the server core by the runner.
``bare`` and the two third-party servers live in ``bench/apps/`` (standalone scripts).
"""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.venvs import contender_python
from service.bundle import MODEL_FILE

#: Where the standalone contender apps live (bench/apps, beside this package).
APPS_DIR = Path(__file__).resolve().parents[1] / "apps"

#: Every contender, in table order; the external ones need an install and are opt-in.
LOCAL = ("bare", "naive", "probserve", "probserve-v2", "probserve-lean")
EXTERNAL = ("kserve", "mlserver")
#: The gRPC cell: the Open Inference Protocol's ModelInfer, driven by bench.harness.grpc_load.
GRPC = ("probserve-grpc", "kserve-grpc")
ALL = LOCAL + EXTERNAL + GRPC
#: What `probserve bench` runs when no --contenders is given (no install needed).
DEFAULT = ("bare", "naive", "probserve")
#: The contenders that can run their graph on CUDA (KServe's and MLServer's models here are CPU).
CUDA_CAPABLE = (*LOCAL, "probserve-grpc")


def delay_variant(delay_us: int) -> str:
    """The name of probserve (every feature on) run with another batching delay."""
    return f"probserve@{delay_us}us"


def _variant_delay(name: str) -> int | None:
    base, sep, rest = name.partition("@")
    if base != "probserve" or not sep or not rest.endswith("us") or not rest[:-2].isdigit():
        return None
    return int(rest[:-2])


@dataclass
class Contender:
    """One server: its command, environment, predict path and body protocol (v1 or v2).

    A gRPC contender also names its gRPC port: it is driven there, and probed over HTTP.
    """

    name: str
    command: list[str]
    path: str
    protocol: str
    env: dict[str, str] = field(default_factory=dict)
    grpc_port: int | None = None


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uvicorn(factory: str, port: int, app_dir: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", "--factory", factory]
    if app_dir is not None:
        cmd += ["--app-dir", str(app_dir)]
    return [
        *cmd, "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
    ]  # fmt: skip


def _probserve(
    name: str,
    repository: Path,
    model: str,
    port: int,
    work: Path,
    telemetry: bool,
    providers: str,
    delay_us: int | None = None,
    grpc_port: int | None = None,
) -> Contender:
    # Every feature on: intervals and sets (the body asks for a level), validation, metrics and
    # the Parquet prediction log (a dataset directory, a plain path) in a throwaway directory;
    # "lean" turns the telemetry off.
    log = str(work / name / "predictions") if telemetry else "none"
    cmd = [
        sys.executable, "-m", "service.cli", "serve", "--model-repository", str(repository),
        "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port or 0),
    ]  # fmt: skip
    v2 = name in ("probserve-v2", "probserve-grpc")
    path = f"/v2/models/{model}/infer" if v2 else f"/v1/models/{model}/predict"
    env = {
        "PROBSERVE_METRICS": "true" if telemetry else "false",
        "PROBSERVE_PREDICTION_LOG_URL": log,
        "PROBSERVE_PREDICTION_LOG_SPOOL_DIR": str(work / name / "spool"),
        "PROBSERVE_PROVIDERS": providers,
    }
    if delay_us is not None:
        env["PROBSERVE_MAX_QUEUE_DELAY_US"] = str(delay_us)
    return Contender(name, cmd, path, "v2" if v2 else "v1", env, grpc_port)


def build(
    name: str,
    *,
    repository: Path,
    model: str,
    bundle: Path,
    port: int,
    work: Path,
    venvs: Path,
    providers: str = "cpu",
) -> Contender:
    """The contender called ``name`` listening on ``port``; ``work`` is a scratch directory.

    ``providers`` ("cpu" or "cuda") is where the local contenders run the graph; ``probserve@Nus``
    is probserve with the batching delay set to N microseconds.
    """
    onnx = str(bundle / MODEL_FILE)
    (work / name).mkdir(parents=True, exist_ok=True)
    if providers != "cpu" and name not in CUDA_CAPABLE and _variant_delay(name) is None:
        raise ValueError(f"contender {name!r} runs on CPU only in this benchmark")
    on = {"PROBSERVE_BENCH_PROVIDERS": providers}
    if name == "bare":
        cmd = _uvicorn("bare_app:create_app", port, APPS_DIR)
        return Contender(name, cmd, "/predict", "v1", {"PROBSERVE_BENCH_ONNX": onnx, **on})
    if name == "naive":
        cmd = _uvicorn("bench.harness.naive_app:create_app", port)
        return Contender(name, cmd, "/predict", "v1", {"PROBSERVE_BENCH_BUNDLE": str(bundle), **on})
    if name in ("probserve", "probserve-v2", "probserve-lean"):
        lean = name == "probserve-lean"
        return _probserve(name, repository, model, port, work, not lean, providers)
    if name == "probserve-grpc":
        return _probserve(name, repository, model, port, work, True, providers, None, free_port())
    if (delay_us := _variant_delay(name)) is not None:
        return _probserve(name, repository, model, port, work, True, providers, delay_us)
    if name in ("kserve", "kserve-grpc"):
        python = str(contender_python(venvs, "kserve"))
        script = str(APPS_DIR / "kserve_model.py")
        cmd = [python, script, "--onnx", onnx, "--name", model, "--port", str(port)]
        grpc = free_port() if name == "kserve-grpc" else None
        if grpc is not None:
            cmd += ["--grpc-port", str(grpc)]
        return Contender(name, cmd, f"/v2/models/{model}/infer", "v2", grpc_port=grpc)
    if name == "mlserver":
        return _mlserver(model, onnx, port, work / name, venvs)
    raise ValueError(f"unknown contender {name!r}")


def _mlserver(model: str, onnx: str, port: int, folder: Path, venvs: Path) -> Contender:
    python = contender_python(venvs, "mlserver")
    # "Tuned": inference in the server process (no pool hop), no metrics server, no access log.
    settings = {
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "parallel_workers": 0, "metrics_endpoint": None, "debug": False,
    }  # fmt: skip
    (folder / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": model,
        "implementation": "mlserver_model.OnnxModel",
        "parameters": {"uri": onnx},
    }
    (folder / "model-settings.json").write_text(json.dumps(model_settings))
    cmd = [str(python.parent / "mlserver"), "start", str(folder)]
    path = f"/v2/models/{model}/infer"
    return Contender("mlserver", cmd, path, "v2", {"PYTHONPATH": str(APPS_DIR)})
