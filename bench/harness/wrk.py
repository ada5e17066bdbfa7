"""Drive an HTTP endpoint with wrk (one load thread, pinned to its own core when possible)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import orjson

from service.errors import UsageError

_MARK = "PROBSERVE_JSON "


@dataclass(frozen=True)
class LoadResult:
    """One wrk run: throughput, latency percentiles and failed requests."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def requests_per_s(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str:
    """Path of the wrk binary, or a clear error saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise UsageError("probserve bench needs wrk: apt-get install wrk")
    return path


def pinned(cmd: list[str], core: int | None) -> list[str]:
    """Prefix ``cmd`` with taskset so it runs on one core (no-op where taskset is missing)."""
    taskset = shutil.which("taskset")
    if core is None or taskset is None or (os.cpu_count() or 1) < 2:
        return cmd
    return [taskset, "-c", str(core), *cmd]


def run_wrk(
    url: str, body: bytes, *, connections: int, seconds: float, core: int | None
) -> LoadResult:
    """POST ``body`` to ``url`` for ``seconds`` over ``connections`` keep-alive connections."""
    script = files("bench.harness").joinpath("report.lua")
    with tempfile.TemporaryDirectory(prefix="probserve-bench-") as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        cmd = [
            wrk_path(),
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        env = {**os.environ, "PROBSERVE_BENCH_BODY": str(body_file)}
        out = subprocess.run(
            pinned(cmd, core), env=env, capture_output=True, text=True, check=False, timeout=120
        )
    for line in out.stdout.splitlines():
        if line.startswith(_MARK):
            raw = orjson.loads(line[len(_MARK) :])
            errors = sum(int(v) for k, v in raw.items() if k.startswith("errors_"))
            return LoadResult(
                requests=int(raw["requests"]),
                seconds=raw["duration_us"] / 1e6,
                p50_ms=raw["p50_us"] / 1e3,
                p99_ms=raw["p99_us"] / 1e3,
                errors=errors,
            )
    raise RuntimeError(f"wrk printed no summary (exit {out.returncode}): {out.stderr.strip()}")
