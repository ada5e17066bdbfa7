"""Run the benchmark matrix: servers x batch sizes x concurrencies, plus the in-process ceiling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from service.bench.ceiling import ceiling_rows_per_s
from service.bench.workload import native_body, v2_body
from service.bench.wrk import LoadResult, pinned, run_wrk
from service.bundle import bundle_path, model_names, model_versions, read_manifest
from service.errors import UsageError

#: Server on core 0, load generator on core 1: they must not fight for the same core.
SERVER_CORE = 0
LOAD_CORE = 1


@dataclass(frozen=True)
class Target:
    """One server under test and the URL its predict endpoint answers on."""

    server: str
    protocol: str
    path: str


@dataclass
class Row:
    """One measured cell of the table."""

    server: str
    protocol: str
    batch: int
    connections: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class BenchReport:
    """Everything one run measured; ratios are derived from the rows."""

    model: str
    version: int
    rows: list[Row] = field(default_factory=list)
    ceiling_rows_per_s: dict[int, float] = field(default_factory=dict)

    def find(self, server: str, protocol: str, batch: int, connections: int) -> Row | None:
        """The row for one cell, if measured."""
        for r in self.rows:
            key = (r.server, r.protocol, r.batch, r.connections)
            if key == (server, protocol, batch, connections):
                return r
        return None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def pick_model(repository: Path, model: str | None) -> tuple[str, int]:
    """The model to benchmark (the named one, else the only/first one) and its newest version."""
    names = model_names(repository)
    if model is None:
        if not names:
            raise UsageError(f"no model in {repository}: train one first (probserve train ...)")
        model = names[0]
    versions = model_versions(repository, model)
    if not versions:
        raise UsageError(f"model {model!r} has no version in {repository}")
    return model, versions[-1]


def _post_ok(url: str, body: bytes) -> bool:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_server(
    cmd: Sequence[str], env: dict[str, str], probe_url: str, probe_body: bytes
) -> Iterator[None]:
    """Start a server process pinned to the server core; yield once it answers; stop it."""
    proc = subprocess.Popen(
        pinned(list(cmd), SERVER_CORE),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not _post_ok(probe_url, probe_body):
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"server exited with {proc.returncode}: {err[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer {probe_url} within 90 s")
            time.sleep(0.2)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_benchmark(
    repository: Path,
    model: str | None,
    *,
    port: int,
    seconds: float,
    connections: Sequence[int],
    batches: Sequence[int],
    protocols: Sequence[str] = ("v1",),
) -> BenchReport:
    """Measure probserve and the naive baseline side by side, then the in-process ceiling."""
    name, version = pick_model(repository, model)
    bundle = bundle_path(repository, name, version)
    manifest = read_manifest(bundle)
    report = BenchReport(model=name, version=version)
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PROBSERVE_LOG_LEVEL": "warning", "PROBSERVE_BENCH_BUNDLE": str(bundle)}
    servers = {
        "probserve": [
            sys.executable, "-m", "service.cli", "serve",
            "--model-repository", str(repository), "--host", "127.0.0.1", "--port", str(port),
        ],
        "naive": [
            sys.executable, "-m", "uvicorn", "--factory", "service.bench.naive_app:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
        ],
    }  # fmt: skip
    targets = {
        "probserve": [
            Target("probserve", p, f"/{p}/models/{name}/" + ("predict" if p == "v1" else "infer"))
            for p in protocols
        ],
        "naive": [Target("naive", "v1", "/predict")],
    }
    bodies = {"v1": native_body, "v2": v2_body}
    for server, cmd in servers.items():
        first = targets[server][0]
        probe = bodies[first.protocol](manifest, 1)
        with running_server(cmd, env, base + first.path, probe):
            for target in targets[server]:
                for batch in batches:
                    body = bodies[target.protocol](manifest, batch)
                    # Warm-up: first requests pay for imports, allocations and thread start.
                    run_wrk(base + target.path, body, connections=4, seconds=1, core=LOAD_CORE)
                    for conns in connections:
                        result = run_wrk(
                            base + target.path,
                            body,
                            connections=conns,
                            seconds=seconds,
                            core=LOAD_CORE,
                        )
                        report.rows.append(_row(target, batch, conns, result))
    for batch in batches:
        report.ceiling_rows_per_s[batch] = ceiling_rows_per_s(bundle, batch, seconds=seconds / 2)
    return report


def _row(target: Target, batch: int, conns: int, result: LoadResult) -> Row:
    return Row(
        server=target.server,
        protocol=target.protocol,
        batch=batch,
        connections=conns,
        requests_per_s=result.requests_per_s,
        rows_per_s=result.requests_per_s * batch,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
    )


def format_report(report: BenchReport) -> str:
    """A plain-text table with ratios to the naive baseline and to the ceiling."""
    lines = [
        f"model {report.model} version {report.version}",
        f"{'server':<10}{'proto':<6}{'batch':>6}{'conns':>6}{'req/s':>10}{'rows/s':>11}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}{'x naive':>9}{'x ceiling':>10}",
    ]
    for r in report.rows:
        naive = report.find("naive", "v1", r.batch, r.connections)
        vs_naive = r.requests_per_s / naive.requests_per_s if naive and naive.requests_per_s else 0
        ceiling = report.ceiling_rows_per_s.get(r.batch, 0.0)
        vs_ceiling = r.rows_per_s / ceiling if ceiling else 0.0
        lines.append(
            f"{r.server:<10}{r.protocol:<6}{r.batch:>6}{r.connections:>6}{r.requests_per_s:>10.0f}"
            f"{r.rows_per_s:>11.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.errors:>7}"
            f"{vs_naive:>9.2f}{vs_ceiling:>10.3f}"
        )
    for batch, rows in sorted(report.ceiling_rows_per_s.items()):
        lines.append(f"ceiling: in-process onnxruntime, batch {batch}: {rows:.0f} rows/s")
    return "\n".join(lines)
