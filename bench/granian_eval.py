"""Evaluate granian as probserve's HTTP server: speed, hardening guarantees, ``--workers`` scaling.

Standalone and throwaway: granian is not a dependency of the project, so it is installed outside
the project's environment and put on the PYTHONPATH of the granian servers only::

    .venv/bin/pip install --target /tmp/granian-site 'granian==2.8.7'
    .venv/bin/python bench/granian_eval.py --model-repository DIR [--parts speed,guarantees,workers]

With the defaults (3 rounds of 3 s) a run takes about 4 minutes on a 2-core machine.

The same ASGI app (``service.http.app:create_app_from_env``: the lean front, every feature on:
metrics, SQLite prediction log in a temporary directory) runs under uvicorn exactly as
``probserve serve`` starts it, and under granian (asgi, uvloop, HTTP/1, one worker).

* speed: every server pinned to core 0 and wrk (one thread) to core 1; in each round the servers
  of a cell run back to back (order reversed every other round), so per-round ratios are paired;
  medians per cell, the 1-minute load average before each run beside the figure, and what each
  run cost: server and wrk CPU (/proc), the rest of the machine's, rows per ONNX call.
* guarantees: raw-socket probes of each hardening guarantee (header and body deadlines, the
  connection limit's 503, the 413 a client that uploads its whole body first still reads, SIGTERM
  with a slow client open), against uvicorn as the control so that a probe can be seen to pass.
* workers: ``--workers 1`` vs ``2``, servers and wrk unpinned on the same cores, plus a check
  that ``/metrics`` sums the workers (prometheus-client multiprocess mode).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.bench.procs import tree_cpu_s, tree_rss_mib
from service.bench.workload import native_body
from service.bench.wrk import LoadResult, pinned, run_wrk
from service.bundle import bundle_path, model_names, model_versions, read_manifest

REPO = Path(__file__).resolve().parents[1]
APPS = REPO / "bench" / "apps"
APP_FACTORY = "service.http.app:create_app_from_env"
SERVER_CORE, LOAD_CORE = 0, 1
#: Hardening settings of the guarantee probes: short, so each probe takes seconds.
HEADER_S, BODY_S, KEEP_ALIVE_S, MAX_CONNS, MAX_BYTES = 2.0, 2.0, 3.0, 3, 1 << 20
#: Seconds a probe waits for the server to act before it says "never" (well past each deadline).
PROBE_CAP_S = 7.0
#: probserve's default graceful shutdown period; granian's only bound is its worker kill timeout.
GRACE_S = 20


def loadavg() -> float:
    """The 1-minute load average now."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Spec:
    """How to start one server and what to send it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    path: str
    core: int | None
    probserve: bool = True
    log_db: Path | None = None
    metrics_dir: Path | None = None


class Server:
    """A started server (its own session, so a hung one is killed with all its workers)."""

    def __init__(self, spec: Spec, port: int, work: Path) -> None:
        self.spec, self.port = spec, port
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + spec.path
        self.log = work / f"{spec.name}.log"
        self.rows_ok = 0  # instances answered 200: what the prediction log must hold at the end
        self.lock = threading.Lock()
        self.started = time.monotonic()
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                pinned(spec.argv, spec.core),
                env={**os.environ, **spec.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def count(self, rows: int) -> None:
        """Record ``rows`` instances answered 200."""
        with self.lock:
            self.rows_ok += rows

    def wait_ready(self, body: bytes) -> float:
        """Seconds to /readyz 200 (lifespan ran, model loaded) and a 200 predict."""
        while True:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{self.spec.name} exited {self.proc.returncode}: {tail}")
            if time.monotonic() - self.started > 240:
                raise RuntimeError(f"{self.spec.name} not ready within 240 s")
            ready = not self.spec.probserve or http_status(self.base + "/readyz") == 200
            if ready and post(self.url, body)[0] == 200:
                self.count(1)
                return time.monotonic() - self.started
            time.sleep(0.1)

    def terminate(self, cap_s: float) -> tuple[float | None, int | None]:
        """SIGTERM the main process: (seconds to exit, exit code), or (None, None) and SIGKILL."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(cap_s)
            return time.monotonic() - t0, code
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return None, None

    def kill(self) -> None:
        """Make sure nothing of it is left (no-op once it exited)."""
        if self.proc.poll() is None:
            self.terminate(GRACE_S + 5)


def http_status(url: str) -> int | None:
    """Status of a GET, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def post(url: str, body: bytes, timeout: float = 10) -> tuple[int | None, str]:
    """POST as Python's urllib does (whole body first, then read): (status, what happened)."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status), "answered"
    except urllib.error.HTTPError as exc:
        return exc.code, "answered"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"{type(reason).__name__}: {reason}"


# -- server commands ------------------------------------------------------------------------------


def features_env(work: Path, name: str, repository: Path) -> dict[str, str]:
    """Every feature on, as the benchmark's 'probserve' contender: metrics and a SQLite log."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "PROBSERVE_MODEL_REPOSITORY": str(repository),
        "PROBSERVE_METRICS": "true",
        "PROBSERVE_PREDICTION_LOG_URL": f"sqlite:///{folder / 'p.sqlite'}",
        "PROBSERVE_PREDICTION_LOG_SPOOL_DIR": str(folder / "spool"),
        "PROBSERVE_LOG_LEVEL": "warning",
    }


def uvicorn_spec(
    name: str, ctx: Context, port: int, workers: int, core: int | None, extra_env: dict[str, str]
) -> Spec:
    """probserve behind uvicorn, started the way users start it: ``probserve serve``."""
    env = {**features_env(ctx.work, name, ctx.repository), **extra_env}
    metrics_dir = None
    if workers > 1:  # serve empties and uses a set directory: known here, so it can be checked
        metrics_dir = ctx.work / name / "metrics"
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    argv = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", str(workers)]
    return Spec(name, argv, env, ctx.path, core, True, ctx.work / name / "p.sqlite", metrics_dir)


def granian_argv(port: int, workers: int, target: str, extra: Sequence[str] = ()) -> list[str]:
    """granian serving an ASGI factory: uvloop, HTTP/1 only, no websockets, no access log."""
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop",
        "--http", "1", "--no-ws", "--workers", str(workers), "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--no-access-log", *extra, target,
    ]  # fmt: skip


def granian_spec(
    name: str,
    ctx: Context,
    port: int,
    workers: int,
    core: int | None,
    extra_env: dict[str, str],
    extra_args: Sequence[str] = (),
) -> Spec:
    """The same app under granian; ``--workers N`` gets a multiprocess metrics directory."""
    env = {**features_env(ctx.work, name, ctx.repository), **extra_env}
    env["PYTHONPATH"] = os.pathsep.join([str(ctx.granian_site), str(REPO)])
    metrics_dir = None
    if workers > 1:  # what prepare_multiprocess_metrics does for uvicorn's workers
        metrics_dir = ctx.work / name / "metrics"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    argv = granian_argv(port, workers, APP_FACTORY, extra_args)
    return Spec(name, argv, env, ctx.path, core, True, ctx.work / name / "p.sqlite", metrics_dir)


def bare_specs(ctx: Context, ports: Sequence[int]) -> list[Spec]:
    """The bare ASGI floor (bench/apps/bare_app.py) under uvicorn and under granian."""
    env = {"PROBSERVE_BENCH_ONNX": str(ctx.bundle / "model.onnx")}
    uv = [
        sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(APPS),
        "--host", "127.0.0.1", "--port", str(ports[0]), "--no-access-log",
        "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
        "bare_app:create_app",
    ]  # fmt: skip
    genv = {**env, "PYTHONPATH": os.pathsep.join([str(ctx.granian_site), str(APPS)])}
    gr = granian_argv(ports[1], 1, "bare_app:create_app")
    return [
        Spec("bare-uvicorn", uv, env, "/predict", SERVER_CORE, probserve=False),
        Spec("bare-granian", gr, genv, "/predict", SERVER_CORE, probserve=False),
    ]


# -- load ----------------------------------------------------------------------------------------


@dataclass
class Cell:
    """Rows per request x connections."""

    batch: int
    connections: int

    def label(self) -> str:
        """``1x32`` style."""
        return f"{self.batch}x{self.connections}"


@dataclass
class Figure:
    """One server in one cell: medians over rounds, the load average before each round.

    ``server_cores`` and ``wrk_cores`` are CPU seconds per wall second (the server's whole
    process tree; wrk as a child of this script), ``other_cores`` the rest of the machine's busy
    CPU meanwhile (other users of the shared machine, steal, this script),
    ``server_cpu_ms_per_req`` the server's CPU per answer, ``rows_per_onnx_call`` the mean
    dynamic batch (probserve's own metrics; 0 without them).
    """

    server: str
    cell: str
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cores: float
    wrk_cores: float
    other_cores: float
    server_cpu_ms_per_req: float
    rows_per_onnx_call: float
    loadavg: list[float]
    runs_rps: list[float]


@dataclass
class Run:
    """One wrk run and what it cost."""

    load: LoadResult
    loadavg: float
    server_cpu_s: float
    wrk_cpu_s: float
    machine_cpu_s: float
    batches: tuple[float, float]  # (rows, ONNX calls) during the run


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting on I/O) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _CLK_TCK


def batch_totals(server: Server) -> tuple[float, float]:
    """(rows, ONNX calls) so far from ``probserve_batch_rows`` on /metrics; zeros without it."""
    if not server.spec.probserve:
        return 0.0, 0.0
    try:
        with urllib.request.urlopen(server.base + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0, 0.0
    rows = calls = 0.0
    for line in text.splitlines():
        if line.startswith("probserve_batch_rows_sum"):
            rows += float(line.rsplit(" ", 1)[1])
        elif line.startswith("probserve_batch_rows_count"):
            calls += float(line.rsplit(" ", 1)[1])
    return rows, calls


def measure(server: Server, body: bytes, cell: Cell, seconds: float, core: int | None) -> Run:
    """One wrk run against ``server`` with the server's and wrk's CPU time around it."""
    load = loadavg()
    rows0, calls0 = batch_totals(server)
    cpu0 = tree_cpu_s(server.proc.pid)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = machine_busy_s()
    result = run_wrk(server.url, body, connections=cell.connections, seconds=seconds, core=core)
    busy1 = machine_busy_s()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = tree_cpu_s(server.proc.pid)
    rows1, calls1 = batch_totals(server)
    wrk_s = kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
    batches = (rows1 - rows0, calls1 - calls0)
    return Run(result, load, cpu1 - cpu0, wrk_s, busy1 - busy0, batches)


def drive(
    servers: Sequence[Server],
    cells: Sequence[Cell],
    bodies: Callable[[int], bytes],
    *,
    rounds: int,
    seconds: float,
    core: int | None,
) -> list[Figure]:
    """Warm every server up on every cell, then ``rounds`` alternating rounds; medians.

    ``runs_rps`` keeps each round's figure in round order, for the paired ratios.
    """
    for server in servers:
        for cell in cells:
            run_wrk(
                server.url, bodies(cell.batch), connections=cell.connections, seconds=1, core=core
            )
    runs: dict[tuple[str, str], list[Run]] = {}
    # The servers of one cell run back to back, in reversed order every other round, so each
    # round gives paired figures: a shared machine's slow spell lands on all of them alike.
    for round_ in range(rounds):
        for cell in cells:
            for server in servers if round_ % 2 == 0 else servers[::-1]:
                run = measure(server, bodies(cell.batch), cell, seconds, core)
                runs.setdefault((server.spec.name, cell.label()), []).append(run)
    figures = []
    for server in servers:
        for cell in cells:
            got = runs[(server.spec.name, cell.label())]
            rps = statistics.median(r.load.requests_per_s for r in got)
            rows = sum(r.batches[0] for r in got)
            calls = sum(r.batches[1] for r in got)
            figures.append(
                Figure(
                    server.spec.name,
                    cell.label(),
                    round(rps, 1),
                    round(rps * cell.batch, 1),
                    round(statistics.median(r.load.p50_ms for r in got), 2),
                    round(statistics.median(r.load.p99_ms for r in got), 2),
                    sum(r.load.errors for r in got),
                    round(statistics.median(r.server_cpu_s / r.load.seconds for r in got), 2),
                    round(statistics.median(r.wrk_cpu_s / r.load.seconds for r in got), 2),
                    round(
                        statistics.median(
                            (r.machine_cpu_s - r.server_cpu_s - r.wrk_cpu_s) / r.load.seconds
                            for r in got
                        ),
                        2,
                    ),
                    round(
                        statistics.median(
                            1000 * r.server_cpu_s / max(r.load.requests, 1) for r in got
                        ),
                        3,
                    ),
                    round(rows / calls, 1) if calls else 0.0,
                    [r.loadavg for r in got],
                    [round(r.load.requests_per_s, 1) for r in got],
                )
            )
    return figures


#: (numerator, denominator) pairs whose per-round throughput ratio the report gives.
PAIRS = (
    ("probserve-granian", "probserve-uvicorn"),
    ("bare-granian", "bare-uvicorn"),
    ("uvicorn-w2", "uvicorn-w1"),
    ("granian-w2", "uvicorn-w1"),
    ("granian-w2", "uvicorn-w2"),
)


def paired_ratios(figures: Sequence[Figure]) -> list[dict[str, Any]]:
    """Per cell, ``numerator / denominator`` req/s of each round: median, min and max."""
    by_key = {(f.server, f.cell): f for f in figures}
    out = []
    for num, den in PAIRS:
        for cell in dict.fromkeys(f.cell for f in figures):
            a, b = by_key.get((num, cell)), by_key.get((den, cell))
            if a is None or b is None:
                continue
            per_round = [round(x / y, 2) for x, y in zip(a.runs_rps, b.runs_rps, strict=True) if y]
            out.append(
                {
                    "ratio": f"{num} / {den}",
                    "cell": cell,
                    "median": statistics.median(per_round),
                    "min": min(per_round),
                    "max": max(per_round),
                    "rounds": per_round,
                }
            )
    return out


# -- guarantee probes ----------------------------------------------------------------------------


def _head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def closed_after(sock: socket.socket, cap_s: float) -> tuple[float | None, str]:
    """Seconds until the server closes ``sock`` (None: still open after ``cap_s``), first line."""
    t0 = time.monotonic()
    sock.settimeout(cap_s)
    got = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            got += data
    except TimeoutError:
        return None, got.split(b"\r\n", 1)[0].decode("latin-1")
    except OSError:
        pass  # a reset is a close too
    return round(time.monotonic() - t0, 2), got.split(b"\r\n", 1)[0].decode("latin-1")


def status_line(sock: socket.socket, timeout: float) -> str | None:
    """The first response line read within ``timeout``, else None."""
    sock.settimeout(timeout)
    got = b""
    try:
        while b"\r\n" not in got:
            data = sock.recv(4096)
            if not data:
                return got.decode("latin-1") or "closed"
            got += data
    except TimeoutError:
        return None
    except OSError as exc:
        return type(exc).__name__
    return got.split(b"\r\n", 1)[0].decode("latin-1")


def _drain(sock: socket.socket) -> None:
    """Read what is left of an answer whose status line was read (keep-alive probes)."""
    time.sleep(0.05)
    sock.settimeout(0.2)
    with contextlib.suppress(TimeoutError):
        sock.recv(65536)


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def probe_header_timeout(server: Server) -> dict[str, Any]:
    """A client that sends half its headers: cut after the header deadline?"""
    with _connect(server) as sock:
        sock.sendall(_head(server.spec.path, 100)[:40])
        seconds, line = closed_after(sock, PROBE_CAP_S)
    return {"closed_after_s": seconds, "answer": line, "expected_s": HEADER_S}


def probe_idle_keep_alive(server: Server, body: bytes) -> dict[str, Any]:
    """An idle kept-alive connection after one answer: closed after which timeout?"""
    with _connect(server) as sock:
        sock.sendall(_head(server.spec.path, len(body)) + body)
        line = status_line(sock, 5)
        if line is not None and " 200 " in line:
            server.count(1)
        _drain(sock)  # the rest of the answer; after it only the close can come
        seconds, _ = closed_after(sock, PROBE_CAP_S)
    return {"closed_after_s": seconds, "expected_s": KEEP_ALIVE_S}


def probe_body_deadline(server: Server) -> dict[str, Any]:
    """Headers announce 1000 bytes, 10 come: cut after the body deadline?"""
    with _connect(server) as sock:
        sock.sendall(_head(server.spec.path, 1000) + b'{"instanc')
        seconds, line = closed_after(sock, PROBE_CAP_S)
    return {"closed_after_s": seconds, "answer": line, "expected_s": BODY_S}


def probe_connection_limit(server: Server, body: bytes) -> dict[str, Any]:
    """Hold MAX_CONNS requests mid-body; does one more get a quick 503, or wait?"""
    holders = []
    for _ in range(MAX_CONNS):
        sock = _connect(server)
        sock.sendall(_head(server.spec.path, 1000) + b'{"instanc')
        holders.append(sock)
    time.sleep(0.3)
    with _connect(server) as sock:
        sock.sendall(_head(server.spec.path, len(body)) + body)
        quick = status_line(sock, 1.0)
        holder_answers = [status_line(h, 0.05) for h in holders]
        for h in holders:
            h.close()
        later = status_line(sock, 5.0) if quick is None else None
    for line in (quick, later):
        if line is not None and " 200 " in line:
            server.count(1)
    return {"within_1s": quick, "after_release": later, "holders": holder_answers}


def probe_too_large(server: Server) -> dict[str, Any]:
    """4x the body limit from a client that uploads first (urllib): does it read the 413?"""
    status, what = post(server.url, b"x" * (4 * MAX_BYTES))
    return {"status": status, "outcome": what}


def probe_shutdown(
    server: Server, small: bytes, body: bytes, rows: int, in_flight: int, slow_client: bool
) -> dict[str, Any]:
    """SIGTERM with requests in flight, an idle kept-alive connection, a mid-body client or not.

    The in-flight requests each go on a connection that already had one answer, so the server
    has surely accepted it. Afterwards the prediction log must hold every instance answered 200
    (the lifespan's shutdown drains it).
    """
    idle = _connect(server)
    idle.sendall(_head(server.spec.path, len(small)) + small)
    if " 200 " in (status_line(idle, 5) or ""):
        server.count(1)
    flights = []
    for _ in range(in_flight):
        sock = _connect(server)
        sock.sendall(_head(server.spec.path, len(small)) + small)
        if " 200 " in (status_line(sock, 5) or ""):
            server.count(1)
        _drain(sock)
        flights.append(sock)
    slow = _connect(server)
    if slow_client:
        slow.sendall(_head(server.spec.path, 1000) + b'{"instanc')
    for sock in flights:
        sock.sendall(_head(server.spec.path, len(body)) + body)
    time.sleep(0.05)
    answers: list[str | None] = [None] * in_flight

    def read(i: int) -> None:
        answers[i] = status_line(flights[i], GRACE_S + 5)

    readers = [threading.Thread(target=read, args=(i,)) for i in range(in_flight)]
    exit_s, code = None, None
    try:
        for t in readers:
            t.start()
        exit_s, code = server.terminate(GRACE_S + 5)
    finally:
        for t in readers:
            t.join()
        for sock in (idle, slow, *flights):
            sock.close()
    served = sum(1 for a in answers if a is not None and " 200 " in a)
    server.count(served * rows)
    logged = count_log_rows(server.spec.log_db)
    return {
        "exit_s": None if exit_s is None else round(exit_s, 2),
        "exit_code": code,
        "in_flight_answers": answers,
        "log_rows": logged,
        "rows_answered_200": server.rows_ok,
        # > 0: requests served (logged) whose answer never reached the client; < 0: rows lost.
        "log_minus_answered": None if logged is None else logged - server.rows_ok,
        "worker_killed": "refused to gracefully stop" in server.log.read_text(errors="replace"),
    }


def count_log_rows(db: Path | None) -> int | None:
    """Rows in the prediction log's predictions table (None without a log)."""
    if db is None or not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM predictions").fetchone()[0])


#: The manifest of the model under test, read once in main.
_MANIFESTS: dict[str, Any] = {}


def metrics_total(base: str) -> float | None:
    """Sum of ``probserve_predictions_total`` on one /metrics scrape."""
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("probserve_predictions_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def probe_multiprocess_metrics(server: Server, body: bytes, requests: int) -> dict[str, Any]:
    """Every /metrics scrape, whichever worker answers it, sums all workers' predictions."""
    before = [metrics_total(server.base) for _ in range(6)]
    for _ in range(requests):  # a fresh connection each: the kernel spreads them over workers
        if post(server.url, body)[0] == 200:
            server.count(1)
    after = [metrics_total(server.base) for _ in range(6)]
    files = server.spec.metrics_dir
    pids = sorted({p.stem.rsplit("_", 1)[-1] for p in files.glob("*.db")}) if files else []
    steady = len(set(before)) == 1 and len(set(after)) == 1
    delta = None if not steady or before[0] is None or after[0] is None else after[0] - before[0]
    return {
        "scrapes_before": before,
        "scrapes_after": after,
        "requests": requests,
        "delta": delta,
        "sums_all_workers": delta == requests,
        "worker_pid_files": pids,
    }


# -- parts ---------------------------------------------------------------------------------------


@dataclass
class Context:
    """What every part needs."""

    repository: Path
    bundle: Path
    path: str
    granian_site: Path
    work: Path
    rounds: int
    seconds: float


@dataclass
class Report:
    """Everything measured, JSON-ready."""

    model: str
    commit: str
    dirty: bool
    versions: dict[str, str]
    cpu_count: int
    ready_s: dict[str, float] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)
    speed: list[Figure] = field(default_factory=list)
    workers: list[Figure] = field(default_factory=list)
    multiprocess_metrics: dict[str, Any] = field(default_factory=dict)
    guarantees: dict[str, dict[str, Any]] = field(default_factory=dict)


def start_all(specs: Sequence[Spec], ctx: Context, report: Report) -> list[Server]:
    """Start every server at once (start-up is slow on a busy machine), wait for each."""
    servers = [Server(s, int(s.argv[s.argv.index("--port") + 1]), ctx.work) for s in specs]
    probe = native_body(_MANIFESTS["m"], 1)
    try:
        for server in servers:
            report.ready_s[server.spec.name] = round(server.wait_ready(probe), 2)
    except BaseException:
        for server in servers:
            server.kill()
        raise
    return servers


def _drive_specs(
    specs: Sequence[Spec],
    ctx: Context,
    report: Report,
    cells: Sequence[Cell],
    core: int | None,
    after: Callable[[list[Server]], None],
) -> list[Figure]:
    """Start the servers, drive every cell in alternating rounds, call ``after``, kill them."""
    servers = start_all(specs, ctx, report)
    try:
        results = drive(
            servers,
            cells,
            lambda rows: native_body(_MANIFESTS["m"], rows),
            rounds=ctx.rounds,
            seconds=ctx.seconds,
            core=core,
        )
        after(servers)
        return results
    finally:
        for server in servers:
            server.kill()


def part_speed(ctx: Context, report: Report, cells: Sequence[Cell], bare: bool) -> None:
    """Pinned: uvicorn vs granian, the same app, every feature on (plus the bare floor)."""
    specs = [
        uvicorn_spec("probserve-uvicorn", ctx, free_port(), 1, SERVER_CORE, {}),
        granian_spec("probserve-granian", ctx, free_port(), 1, SERVER_CORE, {}),
    ]
    if bare:
        specs += bare_specs(ctx, [free_port(), free_port()])

    def rss(servers: list[Server]) -> None:
        for server in servers:
            report.rss_mib[server.spec.name] = round(tree_rss_mib(server.proc.pid), 1)

    report.speed = _drive_specs(specs, ctx, report, cells, LOAD_CORE, rss)


def part_workers(ctx: Context, report: Report, cells: Sequence[Cell], granian: bool) -> None:
    """Unpinned, wrk on the same two cores: --workers 1 vs 2; then /metrics across workers."""
    specs = [
        uvicorn_spec("uvicorn-w1", ctx, free_port(), 1, None, {}),
        uvicorn_spec("uvicorn-w2", ctx, free_port(), 2, None, {}),
    ]
    if granian:
        specs.append(granian_spec("granian-w2", ctx, free_port(), 2, None, {}))

    def metrics(servers: list[Server]) -> None:
        body = native_body(_MANIFESTS["m"], 1)
        for server in servers:
            if server.spec.metrics_dir is not None:
                report.multiprocess_metrics[server.spec.name] = probe_multiprocess_metrics(
                    server, body, 100
                )

    report.workers = _drive_specs(specs, ctx, report, cells, None, metrics)


def part_guarantees(ctx: Context, report: Report) -> None:
    """Each probe against uvicorn (the control), granian, and granian with a kill timeout.

    The SIGTERM probe runs on its own servers, without the tiny connection limit.
    """
    deadlines = {
        "PROBSERVE_HEADER_TIMEOUT_S": str(HEADER_S),
        "PROBSERVE_BODY_TIMEOUT_S": str(BODY_S),
        "PROBSERVE_KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_S),
        "PROBSERVE_MAX_REQUEST_BYTES": str(MAX_BYTES),
    }
    limited = {**deadlines, "PROBSERVE_MAX_CONNECTIONS": str(MAX_CONNS)}
    # granian's nearest equivalents: the header read timeout and the per-worker backpressure.
    header = ["--http1-header-read-timeout", str(int(HEADER_S * 1000))]
    backpressure = ["--backpressure", str(MAX_CONNS)]
    kill = ["--workers-kill-timeout", str(GRACE_S)]
    specs = [
        uvicorn_spec("guard-uvicorn", ctx, free_port(), 1, None, limited),
        granian_spec("guard-granian", ctx, free_port(), 1, None, limited, header + backpressure),
        uvicorn_spec("stop-uvicorn", ctx, free_port(), 1, None, deadlines),
        granian_spec("stop-granian", ctx, free_port(), 1, None, deadlines, header),
        granian_spec("stop-granian-noslow", ctx, free_port(), 1, None, deadlines, header),
        granian_spec("stop-granian-kill", ctx, free_port(), 1, None, deadlines, header + kill),
    ]
    servers = start_all(specs, ctx, report)
    small = native_body(_MANIFESTS["m"], 1)
    rows = 256  # well under the 1 MiB limit, long enough to be in flight at SIGTERM
    big = native_body(_MANIFESTS["m"], rows)
    results: dict[str, dict[str, Any]] = {}

    def run(server: Server) -> None:
        got: dict[str, Any] = {}
        try:
            if server.spec.name.startswith("stop-"):
                slow = not server.spec.name.endswith("-noslow")
                got["sigterm"] = probe_shutdown(server, small, big, rows, 4, slow)
                got["sigterm"]["slow_client"] = slow
            else:
                got["header_timeout"] = probe_header_timeout(server)
                got["idle_keep_alive"] = probe_idle_keep_alive(server, small)
                got["body_deadline"] = probe_body_deadline(server)
                got["connection_limit"] = probe_connection_limit(server, small)
                got["too_large_413"] = probe_too_large(server)
        except Exception as exc:  # one server's failure must not hide the others' results
            got["error"] = f"{type(exc).__name__}: {exc}"
        results[server.spec.name] = got

    try:
        threads = [threading.Thread(target=run, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for server in servers:
            server.kill()
    report.guarantees = dict(sorted(results.items()))


# -- main ----------------------------------------------------------------------------------------


def pick(repository: Path, model: str | None) -> tuple[str, int]:
    """The named (else first) model and its newest version."""
    name = model or next(iter(model_names(repository)), None)
    if name is None:
        raise SystemExit(f"no model in {repository}")
    return name, model_versions(repository, name)[-1]


def package_versions(granian_site: Path) -> dict[str, str]:
    """Versions of the packages that decide the result."""
    from importlib.metadata import PathDistribution, version

    found = {p: version(p) for p in ("uvicorn", "uvloop", "httptools", "fastapi", "onnxruntime")}
    for dist in granian_site.glob("granian-*.dist-info"):
        found["granian"] = PathDistribution(dist).version
    return found


def git_state() -> tuple[str, bool]:
    """HEAD and whether the working tree differs from it (others edit the same checkout)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return git("rev-parse", "--short", "HEAD"), bool(git("status", "--porcelain", "--", "service"))


def markdown(report: Report) -> str:
    """The tables and probe results, for a report."""
    out = [
        f"model {report.model}; commit {report.commit}"
        f"{' + uncommitted edits' if report.dirty else ''}; {report.cpu_count} CPUs; "
        f"{json.dumps(report.versions)}",
        f"ready (s): {json.dumps(report.ready_s)}; RSS MiB: {json.dumps(report.rss_mib)}",
    ]
    for title, figures in (
        ("speed (pinned)", report.speed),
        ("workers (unpinned)", report.workers),
    ):
        if not figures:
            continue
        out += [
            "",
            f"### {title}",
            "| server | cell | req/s | rows/s | p50 ms | p99 ms | errors | server cores | "
            "wrk cores | other cores | server CPU ms/req | rows/ONNX call | runs req/s | loadavg |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for f in figures:
            out.append(
                f"| {f.server} | {f.cell} | {f.requests_per_s:.0f} | {f.rows_per_s:.0f} | "
                f"{f.p50_ms} | {f.p99_ms} | {f.errors} | {f.server_cores} | {f.wrk_cores} | "
                f"{f.other_cores} | "
                f"{f.server_cpu_ms_per_req} | {f.rows_per_onnx_call} | {f.runs_rps} | "
                f"{f.loadavg} |"
            )
    ratios = paired_ratios([*report.speed, *report.workers])
    if ratios:
        out += ["", "### paired ratios (req/s, per round)", "| ratio | cell | median | min | max |"]
        out.append("|---|---|---|---|---|")
        out += [
            f"| {r['ratio']} | {r['cell']} | {r['median']} | {r['min']} | {r['max']} |"
            for r in ratios
        ]
    if report.multiprocess_metrics:
        out += [
            "",
            "### /metrics across workers",
            json.dumps(report.multiprocess_metrics, indent=1),
        ]
    if report.guarantees:
        out += ["", "### guarantees", json.dumps(report.guarantees, indent=1)]
    return "\n".join(out)


def parse_cells(text: str) -> list[Cell]:
    """``1x1,1x32`` as cells."""
    cells = []
    for part in text.split(","):
        batch, _, conns = part.strip().partition("x")
        cells.append(Cell(int(batch), int(conns)))
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts, print markdown, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model")
    parser.add_argument("--granian-site", type=Path, default=Path("/tmp/granian-site"))
    parser.add_argument("--parts", default="speed,guarantees,workers")
    parser.add_argument("--speed-cells", default="1x1,1x32,64x8")
    parser.add_argument("--workers-cells", default="1x32,64x8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-bare", action="store_true", help="Skip the bare-app control.")
    parser.add_argument("--no-granian-workers", action="store_true")
    parser.add_argument("--json", type=Path, help="Also write the report here.")
    parser.add_argument(
        "--work-dir", type=Path, help="Keep server logs and prediction logs here (default: temp)."
    )
    args = parser.parse_args(argv)
    if not (args.granian_site / "granian").is_dir():
        raise SystemExit(f"granian not found under {args.granian_site} (see this file's docstring)")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores: the server on one, wrk on the other")
    repository = args.model_repository.resolve()
    name, version = pick(repository, args.model)
    bundle = bundle_path(repository, name, version)
    _MANIFESTS["m"] = read_manifest(bundle)
    commit, dirty = git_state()
    report = Report(
        f"{name} v{version}",
        commit,
        dirty,
        package_versions(args.granian_site),
        os.cpu_count() or 0,
    )
    parts = {p.strip() for p in args.parts.split(",")}
    keep = args.work_dir is not None
    with tempfile.TemporaryDirectory(prefix="granian-eval-") as scratch:
        tmp = str(args.work_dir.resolve()) if keep else scratch
        ctx = Context(
            repository,
            bundle,
            f"/v1/models/{name}/predict",
            args.granian_site.resolve(),
            Path(tmp),
            args.rounds,
            args.seconds,
        )
        if "speed" in parts:
            part_speed(ctx, report, parse_cells(args.speed_cells), bare=not args.no_bare)
        if "guarantees" in parts:
            part_guarantees(ctx, report)
        if "workers" in parts:
            part_workers(
                ctx, report, parse_cells(args.workers_cells), granian=not args.no_granian_workers
            )
    text = markdown(report)
    print(text)
    if args.json is not None:
        ratios = paired_ratios([*report.speed, *report.workers])
        args.json.write_text(json.dumps({**asdict(report), "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
