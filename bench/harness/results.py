"""The benchmark's table: plain text for the terminal, Markdown for bench/results/latest.md."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import onnxruntime as ort

from bench.harness.runner import (
    SETTLE_MAX_SHARE,
    SETTLE_TIMEOUT_S,
    SETTLE_WINDOW_S,
    BenchReport,
    Row,
)

#: The contender every ratio is taken from: probserve with every feature on, native protocol.
REFERENCE = "probserve"
HEADER = (
    "| contender | rows | conns | req/s | rows/s | p50 ms | p99 ms | errors | RSS MiB "
    "| peak RSS MiB "
    "| probserve rows/s ÷ this | probserve p50 ÷ this |"
)
_OUR_PACKAGES = ("onnxruntime", "numpy", "orjson", "uvicorn", "uvloop", "httptools", "fastapi")


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if ours and theirs else "-"


def table_lines(report: BenchReport) -> list[str]:
    """The Markdown table: one line per contender and cell, then the in-process ceiling."""
    lines = [HEADER, _rule()]
    for r in sorted(report.rows, key=lambda r: (r.batch, r.connections)):
        ref = report.find(REFERENCE, r.batch, r.connections)
        memory = (report.rss_mib.get(r.server, 0.0), report.peak_rss_mib.get(r.server, 0.0))
        lines.append(_line(r, ref, *memory))
    for batch, rows in sorted(report.ceiling_rows_per_s.items()):
        ours = [r.rows_per_s for r in report.rows if r.server == REFERENCE and r.batch == batch]
        by_rows = _ratio(max(ours), rows) if ours else "-"
        lines.append(
            f"| ceiling (in-process ONNX Runtime, {report.providers}) | {batch} | - "
            f"| {rows / batch:.0f} | {rows:.0f} | - | - | 0 | - | - | {by_rows} | - |"
        )
    return lines


def _rule() -> str:
    return "|" + "---|" * (HEADER.count("|") - 1)


def _line(r: Row, ref: Row | None, rss: float, peak: float) -> str:
    by_rows = _ratio(ref.rows_per_s, r.rows_per_s) if ref else "-"
    by_p50 = _ratio(ref.p50_ms, r.p50_ms) if ref else "-"
    return (
        f"| {r.server} | {r.batch} | {r.connections} | {r.requests_per_s:.0f} | {r.rows_per_s:.0f} "
        f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {rss:.0f} | {peak:.0f} | {by_rows} "
        f"| {by_p50} |"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine_lines(extra_versions: Mapping[str, str]) -> list[str]:
    """nproc, CPU model, Python, wrk and package versions, as Markdown bullets."""
    versions = {}
    for package in _OUR_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    # The module that runs, not a distribution's metadata: onnxruntime-gpu installs the same
    # module under another name, and both may be installed.
    versions["onnxruntime"] = f"{ort.__version__} ({ort.get_device()} build)"
    versions.update(extra_versions)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return [
        f"- nproc {os.cpu_count()}, CPU {_cpu_model()}, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; wrk: {_wrk_version()}",
        # Other work on the machine skews every figure; the load average says how much there was.
        f"- load average (1, 5, 15 min) when written: {load}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]


def _isolation_lines(report: BenchReport) -> list[str]:
    """How each contender had the server core to itself, and the cells where it did not settle."""
    cells = {k: sum(r.rounds for r in report.rows if r.server == k) for k in report.unsettled}
    unsettled = ", ".join(f"{k} {v} of {cells[k]}" for k, v in report.unsettled.items() if v)
    return [
        "- while one contender is driven (warm-up and every cell of a round), every other "
        "contender's process tree is stopped (SIGSTOP) and continued afterwards (SIGCONT), so it "
        "has the server core to itself",
        f"- before each cell the harness waits until that contender's process tree uses under "
        f"{SETTLE_MAX_SHARE:.0%} of a core (CPU time from /proc) over {SETTLE_WINDOW_S * 1000:g} "
        f"ms, for at most {SETTLE_TIMEOUT_S:g} s; cells started before it settled: "
        f"{unsettled or 'none'}",
    ]


def markdown(
    report: BenchReport, *, rounds: int, seconds: float, extra_versions: Mapping[str, str]
) -> str:
    """The whole results file."""
    ready = ", ".join(f"{k} {v:.2f} s" for k, v in report.ready_s.items())
    return "\n".join(
        [
            f"# probserve bench: model {report.model} version {report.version}",
            "",
            "## Machine",
            *machine_lines(extra_versions),
            "",
            "## Method",
            f"- graph on {report.providers.upper()} for every contender and the ceiling; the "
            "ceiling's ratio is probserve's best rows/s at that batch size (any connection "
            "count) over it",
            f"- every server pinned to core 0 and wrk (1 thread) to core 1; {rounds} alternating "
            f"rounds of {seconds:g} s per cell; figures are medians over rounds; RSS is the "
            "server's process tree after the last round, once idle with the core to itself; "
            "peak RSS is the sum of each process's own peak (VmHWM) over the whole run",
            *_isolation_lines(report),
            "- probserve: intervals, prediction sets and validation on, metrics on, Parquet "
            "prediction log in a temporary directory; probserve-lean: metrics and log off; "
            "probserve@Nus: probserve with the batching delay set to N microseconds",
            "- the -grpc contenders are driven over gRPC (ModelInfer, raw tensor contents, the "
            "same request for both) by bench.harness.grpc_load instead of wrk: closed-loop "
            "grpc.aio callers, one HTTP/2 connection each, in up to 2 processes on the load core",
            f"- start-up to first answer (all started at once on one core): {ready}",
            "",
            "## Results",
            *table_lines(report),
            "",
        ]
    )
