"""The benchmark harness end to end on a tiny load, local contenders only (no install).

Checks the table's shape and that every contender answered, never a timing; and, on real busy
processes, that the harness stops every other contender's process tree and waits for quiet.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.harness import contenders
from bench.harness.cli import parse_contenders, parse_delays, with_delay_variants
from bench.harness.grpc_load import infer_request
from bench.harness.procs import (
    isolated,
    settle,
    tree,
    tree_cpu_s,
    tree_peak_rss_mib,
    tree_rss_mib,
)
from bench.harness.results import HEADER, markdown, table_lines
from bench.harness.runner import BenchReport, Cell, Row, parse_cells, run_benchmark
from service.errors import UsageError
from tests.support import require_program


def test_cells_parse_rows_by_connections() -> None:
    assert parse_cells("1x1, 64x8") == [Cell(1, 1), Cell(64, 8)]
    for bad in ("1", "0x4", "4x0", "ax2", ""):
        with pytest.raises(UsageError, match="--cells"):
            parse_cells(bad)


def test_contenders_parse_and_external_ones_are_opt_in() -> None:
    assert parse_contenders("all")[-4:] == ["kserve", "mlserver", "probserve-grpc", "kserve-grpc"]
    assert parse_contenders("bare,probserve,bare") == ["bare", "probserve"]
    with pytest.raises(UsageError, match="--contenders"):
        parse_contenders("bare,torchserve")


def test_delay_sweep_adds_probserve_variants_and_cuda_refuses_cpu_only_servers() -> None:
    assert parse_delays("0, 250,1000,250") == [0, 250, 1000]
    assert parse_delays("") == []
    for bad in ("-1", "1.5", "x", "1000001"):
        with pytest.raises(UsageError, match="--delays-us"):
            parse_delays(bad)
    names = with_delay_variants(["bare", "probserve"], [0, 4000], "cuda")
    assert names == ["bare", "probserve", "probserve@0us", "probserve@4000us"]
    with pytest.raises(UsageError, match=r"kserve run on CPU only"):
        with_delay_variants(["probserve", "kserve"], [], "cuda")
    with pytest.raises(UsageError, match="--providers"):
        with_delay_variants(["probserve"], [], "tpu")


def test_variants_and_providers_reach_the_servers_environment(tmp_path: Path) -> None:
    common = {
        "repository": tmp_path,
        "model": "m",
        "bundle": tmp_path / "m" / "1",
        "port": 1,
        "work": tmp_path,
        "venvs": tmp_path,
    }
    variant = contenders.build("probserve@250us", providers="cuda", **common)  # type: ignore[arg-type]
    assert variant.env["PROBSERVE_MAX_QUEUE_DELAY_US"] == "250"
    assert variant.env["PROBSERVE_PROVIDERS"] == "cuda"
    assert variant.path == "/v1/models/m/predict"
    default = contenders.build("probserve", **common)  # type: ignore[arg-type]
    assert "PROBSERVE_MAX_QUEUE_DELAY_US" not in default.env  # the settings' default delay
    # The Parquet prediction log: a plain directory path (no scheme) in the contender's folder.
    assert default.env["PROBSERVE_PREDICTION_LOG_URL"] == str(
        tmp_path / "probserve" / "predictions"
    )
    lean = contenders.build("probserve-lean", **common)  # type: ignore[arg-type]
    assert lean.env["PROBSERVE_PREDICTION_LOG_URL"] == "none"
    assert default.env["PROBSERVE_PROVIDERS"] == "cpu"
    assert (
        contenders.build("bare", providers="cuda", **common).env[  # type: ignore[arg-type]
            "PROBSERVE_BENCH_PROVIDERS"
        ]
        == "cuda"
    )
    with pytest.raises(ValueError, match="unknown contender"):
        contenders.build("probserve@fastus", **common)  # type: ignore[arg-type]


def test_the_grpc_request_is_the_v2_body_with_raw_tensor_contents() -> None:
    from tritonclient.grpc import service_pb2

    body = {
        "id": "b",
        "inputs": [
            {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]},
            {"name": "c", "shape": [2], "datatype": "BYTES", "data": ["ab", ""]},
        ],
        "parameters": {"confidence_level": 0.9},
    }
    request = service_pb2.ModelInferRequest.FromString(infer_request(body, "m"))
    assert (request.model_name, request.id) == ("m", "b")
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("x", "FP32", [2]),
        ("c", "BYTES", [2]),
    ]
    # Little-endian float32 1.0 and 2.0; BYTES as a uint32 length before each element.
    assert list(request.raw_input_contents) == [
        b"\x00\x00\x80\x3f\x00\x00\x00\x40",
        b"\x02\x00\x00\x00ab\x00\x00\x00\x00",
    ]
    assert request.parameters["confidence_level"].double_param == 0.9


def test_ratios_are_probserve_over_each_contender() -> None:
    # Hand-computed: probserve 300 rows/s at p50 0.6 ms, bare 200 rows/s at p50 0.4 ms.
    report = BenchReport(
        model="m",
        version=1,
        rss_mib={"probserve": 150.0, "bare": 50.0},
        peak_rss_mib={"probserve": 210.0, "bare": 60.0},
    )
    report.rows = [
        Row("probserve", 1, 1, 300.0, 300.0, 0.6, 1.0, 0, 3),
        Row("bare", 1, 1, 200.0, 200.0, 0.4, 0.8, 0, 3),
    ]
    report.ceiling_rows_per_s = {1: 1000.0}
    lines = table_lines(report)
    assert lines[0] == HEADER
    assert "| bare | 1 | 1 | 200 | 200 | 0.40 | 0.80 | 0 | 50 | 60 | 1.50 | 1.50 |" in lines
    assert "| probserve | 1 | 1 | 300 | 300 | 0.60 | 1.00 | 0 | 150 | 210 | 1.00 | 1.00 |" in lines
    # The ceiling's ratio: probserve's 300 rows/s over the in-process 1000 rows/s.
    assert lines[-1] == (
        "| ceiling (in-process ONNX Runtime, cpu) | 1 | - | 1000 | 1000 "
        "| - | - | 0 | - | - | 0.30 | - |"
    )


def test_method_says_each_contender_had_the_core_to_itself_and_counts_unsettled_cells() -> None:
    report = BenchReport(model="m", version=1, unsettled={"probserve": 1})
    report.rows = [Row("probserve", 1, 1, 300.0, 300.0, 0.6, 1.0, 0, 3)]
    text = markdown(report, rounds=3, seconds=1, extra_versions={})
    assert "every other contender's process tree is stopped (SIGSTOP)" in text
    assert "under 2% of a core (CPU time from /proc) over 200 ms, for at most 10 s" in text
    assert "cells started before it settled: probserve 1 of 3" in text
    assert "Parquet prediction log in a temporary directory" in text
    assert "SQLite" not in text
    report.unsettled = {}
    assert "cells started before it settled: none" in markdown(
        report, rounds=3, seconds=1, extra_versions={}
    )


#: Spins on a core; with a child, first starts a spinning child and reaps it when it dies.
_SPIN = "while True: pass"
_SPIN_WITH_CHILD = (
    "import subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
    "while child.poll() is None: pass\n"
)


def _wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll ``check`` every 20 ms until it holds; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _advances(pid: int) -> bool:
    """Whether the CPU time of ``pid`` (and any descendants) grows within a few seconds."""
    start = tree_cpu_s(pid)
    return _wait_for(lambda: tree_cpu_s(pid) > start)


@pytest.fixture
def spawn() -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Start ``python -c CODE`` processes; each tree is killed (children first) at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(code: str) -> subprocess.Popen[bytes]:
        procs.append(subprocess.Popen([sys.executable, "-c", code]))
        return procs[-1]

    yield start
    for proc in procs:
        for pid in reversed(list(tree(proc.pid))):  # children first: their parent reaps them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_isolated_stops_every_other_process_tree_and_always_continues_it(
    spawn: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    kept, other = spawn(_SPIN), spawn(_SPIN_WITH_CHILD)
    assert _wait_for(lambda: len(list(tree(other.pid))) == 2)
    other_tree = list(tree(other.pid))  # the spinning process and its spinning child
    assert all(_advances(pid) for pid in [kept.pid, *other_tree])

    with isolated(kept.pid, [kept.pid, other.pid]):
        assert _advances(kept.pid)  # the one being measured runs on
        _assert_frozen(other_tree)
    assert all(_advances(pid) for pid in other_tree)

    # Continued on the way out of an interrupted block too, or shutdown would hang on it.
    with pytest.raises(KeyboardInterrupt):
        _interrupt_while_isolated(kept.pid, [other.pid], other_tree)
    assert all(_advances(pid) for pid in other_tree)


def _assert_frozen(pids: list[int]) -> None:
    """The CPU time of each of ``pids`` stays put for 300 ms (each is stopped)."""
    frozen = [tree_cpu_s(pid) for pid in pids]
    time.sleep(0.3)
    assert [tree_cpu_s(pid) for pid in pids] == frozen


def _interrupt_while_isolated(keep: int, pids: list[int], watched: list[int]) -> None:
    """Isolate ``keep``, check ``watched`` is stopped, then interrupt as Ctrl-C would."""
    with isolated(keep, pids):
        _assert_frozen(watched)
        raise KeyboardInterrupt


def test_settle_returns_promptly_when_idle_and_gives_up_when_busy(
    spawn: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    idle, busy = spawn("import time; time.sleep(60)"), spawn(_SPIN)
    start = time.monotonic()
    assert settle(idle.pid, window_s=0.2, max_share=0.02, timeout_s=5.0)
    assert time.monotonic() - start < 2.0
    start = time.monotonic()
    assert not settle(busy.pid, window_s=0.2, max_share=0.02, timeout_s=0.6)
    assert 0.6 <= time.monotonic() - start < 2.0  # it gave up at its bound, not before


@pytest.mark.slow
def test_bench_runs_local_contenders_and_writes_a_well_formed_table(
    bundle_repository: Path, tmp_path: Path
) -> None:
    require_program("wrk")
    names = ["bare", "naive", "probserve", "probserve-lean", "probserve-grpc"]
    cells = [Cell(1, 1), Cell(4, 2)]
    report = run_benchmark(
        bundle_repository,
        None,
        names=names,
        cells=cells,
        rounds=2,
        seconds=1,
        venvs=tmp_path / "venvs",
        warmup_s=1,
    )
    assert {(r.server, r.batch, r.connections) for r in report.rows} == {
        (n, c.batch, c.connections) for n in names for c in cells
    }
    for row in report.rows:
        assert row.errors == 0, row
        assert row.rounds == 2
        assert row.requests_per_s > 0
        assert row.rows_per_s == pytest.approx(row.requests_per_s * row.batch)
        assert 0 < row.p50_ms <= row.p99_ms
    assert set(report.rss_mib) == set(names) and all(v > 0 for v in report.rss_mib.values())
    # A peak is never below what is held at the end.
    assert set(report.peak_rss_mib) == set(names)
    assert all(report.peak_rss_mib[n] >= report.rss_mib[n] for n in names)
    assert set(report.ready_s) == set(names)
    assert set(report.ceiling_rows_per_s) == {1, 4}
    assert not (tmp_path / "venvs").exists()  # nothing installed for local contenders

    text = markdown(report, rounds=2, seconds=1, extra_versions={})
    assert "## Machine" in text and "nproc" in text and "onnxruntime" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    width = HEADER.count("|")
    assert all(line.count("|") == width for line in table)
    assert len(table) == 2 + len(names) * len(cells) + len(cells)  # header, rule, rows, ceiling
    number = re.compile(r"^-?\d+(\.\d+)?$|^-$")
    for line in table[2:]:
        cells_text = [c.strip() for c in line.strip("|").split("|")]
        assert all(number.match(c) for c in cells_text[1:]), line


def test_peak_rss_counts_memory_already_given_back() -> None:
    # A child touches 64 MiB and frees it: its peak keeps it, its RSS does not.
    script = (
        "import sys, time\n"
        "b = bytearray(64 << 20)\n"
        "b[::4096] = b'x' * (len(b) // 4096)\n"
        "del b\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        rss, peak = tree_rss_mib(child.pid), tree_peak_rss_mib(child.pid)
        assert rss > 0
        assert peak - rss >= 60
    finally:
        child.kill()
        child.wait()
