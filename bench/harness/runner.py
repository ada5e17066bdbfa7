"""Run the benchmark: every contender started at once, cells measured in alternating rounds.

All servers are pinned to the server core, and each round drives every contender through every
cell, so a slow minute of a shared machine lands on all of them rather than on one. While one
contender is driven every other one's process tree is stopped (SIGSTOP), so nothing else of the
benchmark's runs on its core (a prediction-log writer draining its backlog, say), and before
each cell the harness waits until the contender itself is idle. The figure per cell is the
median over rounds.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.harness import contenders as contenders_mod
from bench.harness.ceiling import ceiling_rows_per_s
from bench.harness.grpc_load import run_grpc_load
from bench.harness.procs import (
    continue_all,
    isolated,
    settle,
    tree,
    tree_peak_rss_mib,
    tree_rss_mib,
)
from bench.harness.workload import grpc_body, native_body, v2_body
from bench.harness.wrk import LoadResult, pinned, run_wrk
from service.bundle import bundle_path, model_names, model_versions, read_manifest
from service.errors import UsageError

#: Server on core 0, load generator on core 1: they must not fight for the same core.
SERVER_CORE = 0
LOAD_CORE = 1
#: A contender counts as idle once its tree's CPU time grows by under 2% of a core over 200 ms;
#: after 10 s of trying its cell starts anyway and is counted as unsettled.
SETTLE_WINDOW_S = 0.2
SETTLE_MAX_SHARE = 0.02
SETTLE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Cell:
    """One load shape: rows per request and concurrent connections."""

    batch: int
    connections: int


@dataclass
class Row:
    """One contender in one cell: medians over rounds."""

    server: str
    batch: int
    connections: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    rounds: int


@dataclass
class BenchReport:
    """Everything one run measured; ratios are derived from the rows."""

    model: str
    version: int
    providers: str = "cpu"
    rows: list[Row] = field(default_factory=list)
    rss_mib: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    ready_s: dict[str, float] = field(default_factory=dict)
    ceiling_rows_per_s: dict[int, float] = field(default_factory=dict)
    #: Per contender: cells that started before it settled (the settle bound ran out).
    unsettled: dict[str, int] = field(default_factory=dict)

    def find(self, server: str, batch: int, connections: int) -> Row | None:
        """The row for one cell, if measured."""
        for r in self.rows:
            if (r.server, r.batch, r.connections) == (server, batch, connections):
                return r
        return None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def parse_cells(text: str) -> list[Cell]:
    """``"1x1,1x32,64x8"`` (rows x connections) as cells; a clear error otherwise."""
    cells = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        batch, sep, conns = part.partition("x")
        if not sep or not batch.isdigit() or not conns.isdigit() or "0" in (batch, conns):
            raise UsageError(f"--cells takes ROWSxCONNECTIONS pairs such as 1x32, got {part!r}")
        cells.append(Cell(int(batch), int(conns)))
    if not cells:
        raise UsageError("--cells needs at least one ROWSxCONNECTIONS pair")
    return cells


def pick_model(repository: Path, model: str | None) -> tuple[str, int]:
    """The model to benchmark (the named one, else the first one) and its newest version."""
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


class Server:
    """A contender's process, pinned to the server core, and when it first answered."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.cmd0 = cmd[0]
        self.started = time.monotonic()
        with log.open("w") as log_file:
            self.proc = subprocess.Popen(
                pinned(list(cmd), SERVER_CORE), env=env, stdout=log_file, stderr=subprocess.STDOUT
            )

    def wait_ready(self, probe_url: str, probe_body: bytes) -> float:
        """Seconds from start to the first 200 answer to the probe; an error if it dies first."""
        while not _post_ok(probe_url, probe_body):
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{self.cmd0} exited with {self.proc.returncode}: {tail}")
            if time.monotonic() - self.started > 180:
                raise RuntimeError(f"server did not answer {probe_url} within 180 s")
            time.sleep(0.02)
        return time.monotonic() - self.started

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        # A stopped process never handles SIGTERM; isolation continues its trees, this is a net.
        continue_all(list(tree(self.proc.pid)))
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_benchmark(
    repository: Path,
    model: str | None,
    *,
    names: Sequence[str],
    cells: Sequence[Cell],
    rounds: int,
    seconds: float,
    venvs: Path,
    warmup_s: float = 1.0,
    providers: str = "cpu",
) -> BenchReport:
    """Start every contender, drive each cell ``rounds`` times in alternation, then the ceiling.

    Each contender is driven alone on the server core: the others stopped, itself settled.

    ``providers`` ("cpu" or "cuda") is where every contender and the ceiling run the graph.
    """
    name, version = pick_model(repository, model)
    bundle = bundle_path(repository, name, version)
    manifest = read_manifest(bundle)
    report = BenchReport(model=name, version=version, providers=providers)
    bodies = {"v1": native_body, "v2": v2_body}
    results: dict[tuple[str, Cell], list[LoadResult]] = {}
    with tempfile.TemporaryDirectory(prefix="probserve-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        env_base = {**os.environ, "PROBSERVE_LOG_LEVEL": "warning"}
        live: dict[str, tuple[str, str, int]] = {}  # name -> (url, protocol, pid)
        grpc_targets: dict[str, str] = {}  # name -> host:port of the contenders driven by gRPC
        started: list[tuple[str, Server, str, bytes, str]] = []
        for server in names:
            port = contenders_mod.free_port()
            c = contenders_mod.build(
                server,
                repository=repository,
                model=name,
                bundle=bundle,
                port=port,
                work=work,
                venvs=venvs,
                providers=providers,
            )
            url = f"http://127.0.0.1:{port}{c.path}"
            if c.grpc_port is not None:
                grpc_targets[server] = f"127.0.0.1:{c.grpc_port}"
            proc = Server(c.command, {**env_base, **c.env}, work / server / "server.log")
            stack.callback(proc.stop)
            started.append((server, proc, url, bodies[c.protocol](manifest, 1), c.protocol))
        # All start at once (start-up is slow on a busy machine); ready time is per server.
        for server, proc, url, probe, protocol in started:
            report.ready_s[server] = proc.wait_ready(url, probe)
            live[server] = (url, protocol, proc.proc.pid)
        pids = [pid for _, _, pid in live.values()]

        def drive(server: str, cell: Cell, seconds: float) -> LoadResult:
            url, protocol, _ = live[server]
            target = grpc_targets.get(server)
            if target is None:
                return _drive(url, bodies[protocol](manifest, cell.batch), cell, seconds)
            request = grpc_body(manifest, cell.batch, name)
            return run_grpc_load(
                target, request, connections=cell.connections, seconds=seconds, core=LOAD_CORE
            )

        for server, (_, _, pid) in live.items():
            with isolated(pid, pids):  # warm-up: imports, allocations, thread start, caches
                for cell in cells:
                    drive(server, cell, warmup_s)
        for _ in range(rounds):
            for server, (_, _, pid) in live.items():
                with isolated(pid, pids):  # the server core to itself
                    for cell in cells:
                        if not _settle(pid):
                            report.unsettled[server] = report.unsettled.get(server, 0) + 1
                        results.setdefault((server, cell), []).append(drive(server, cell, seconds))
        for server, (_, _, pid) in live.items():
            # Measured idle, with the core to itself: a server stopped mid-way through
            # background work (a log segment being sealed) would otherwise be measured at that
            # moment's transient; the transient shows in the peak instead.
            with isolated(pid, pids):
                _settle(pid)
                report.rss_mib[server] = tree_rss_mib(pid)
                report.peak_rss_mib[server] = tree_peak_rss_mib(pid)
    for (server, cell), runs in results.items():
        report.rows.append(_row(server, cell, runs))
    for batch in sorted({c.batch for c in cells}):
        report.ceiling_rows_per_s[batch] = ceiling_rows_per_s(
            bundle, batch, seconds=seconds / 2, providers=providers
        )
    return report


def _drive(url: str, body: bytes, cell: Cell, seconds: float) -> LoadResult:
    """One wrk run of ``cell``'s shape against ``url``, wrk on the load core."""
    return run_wrk(url, body, connections=cell.connections, seconds=seconds, core=LOAD_CORE)


def _settle(pid: int) -> bool:
    """Wait until the contender at ``pid`` is idle (drained); False if it did not within bound."""
    return settle(
        pid, window_s=SETTLE_WINDOW_S, max_share=SETTLE_MAX_SHARE, timeout_s=SETTLE_TIMEOUT_S
    )


def _row(server: str, cell: Cell, runs: list[LoadResult]) -> Row:
    rps = statistics.median(r.requests_per_s for r in runs)
    return Row(
        server=server,
        batch=cell.batch,
        connections=cell.connections,
        requests_per_s=rps,
        rows_per_s=rps * cell.batch,
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        errors=sum(r.errors for r in runs),
        rounds=len(runs),
    )
