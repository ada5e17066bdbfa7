"""The benchmark harness end to end on a tiny load, local contenders only (no install).

Checks the table's shape and that every contender answered, never a timing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.bench import contenders
from service.bench.cli import parse_contenders, parse_delays, with_delay_variants
from service.bench.results import HEADER, markdown, table_lines
from service.bench.runner import BenchReport, Cell, Row, parse_cells, run_benchmark
from service.errors import UsageError
from tests.support import require_program


def test_cells_parse_rows_by_connections() -> None:
    assert parse_cells("1x1, 64x8") == [Cell(1, 1), Cell(64, 8)]
    for bad in ("1", "0x4", "4x0", "ax2", ""):
        with pytest.raises(UsageError, match="--cells"):
            parse_cells(bad)


def test_contenders_parse_and_external_ones_are_opt_in() -> None:
    assert parse_contenders("all")[-2:] == ["kserve", "mlserver"]
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
    assert default.env["PROBSERVE_PROVIDERS"] == "cpu"
    assert (
        contenders.build("bare", providers="cuda", **common).env[  # type: ignore[arg-type]
            "PROBSERVE_BENCH_PROVIDERS"
        ]
        == "cuda"
    )
    with pytest.raises(ValueError, match="unknown contender"):
        contenders.build("probserve@fastus", **common)  # type: ignore[arg-type]


def test_ratios_are_probserve_over_each_contender() -> None:
    # Hand-computed: probserve 300 rows/s at p50 0.6 ms, bare 200 rows/s at p50 0.4 ms.
    report = BenchReport(model="m", version=1, rss_mib={"probserve": 150.0, "bare": 50.0})
    report.rows = [
        Row("probserve", 1, 1, 300.0, 300.0, 0.6, 1.0, 0, 3),
        Row("bare", 1, 1, 200.0, 200.0, 0.4, 0.8, 0, 3),
    ]
    report.ceiling_rows_per_s = {1: 1000.0}
    lines = table_lines(report)
    assert lines[0] == HEADER
    assert "| bare | 1 | 1 | 200 | 200 | 0.40 | 0.80 | 0 | 50 | 1.50 | 1.50 |" in lines
    assert "| probserve | 1 | 1 | 300 | 300 | 0.60 | 1.00 | 0 | 150 | 1.00 | 1.00 |" in lines
    # The ceiling's ratio: probserve's 300 rows/s over the in-process 1000 rows/s.
    assert lines[-1] == (
        "| ceiling (in-process ONNX Runtime, cpu) | 1 | - | 1000 | 1000 "
        "| - | - | 0 | - | 0.30 | - |"
    )


@pytest.mark.slow
def test_bench_runs_local_contenders_and_writes_a_well_formed_table(
    bundle_repository: Path, tmp_path: Path
) -> None:
    require_program("wrk")
    names = ["bare", "naive", "probserve", "probserve-lean"]
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
