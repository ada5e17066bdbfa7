"""The benchmark harness runs end to end: both servers answer, wrk measures, the table prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.bench.runner import format_report, run_benchmark
from tests.support import free_port, require_program


@pytest.mark.slow
def test_bench_measures_probserve_naive_and_ceiling(bundle_repository: Path) -> None:
    require_program("wrk")
    report = run_benchmark(
        bundle_repository,
        None,
        port=free_port(),
        seconds=1,
        connections=[2],
        batches=[1, 4],
        protocols=["v1", "v2"],
    )
    cells = {(r.server, r.protocol, r.batch) for r in report.rows}
    assert cells == {
        ("probserve", "v1", 1),
        ("probserve", "v1", 4),
        ("probserve", "v2", 1),
        ("probserve", "v2", 4),
        ("naive", "v1", 1),
        ("naive", "v1", 4),
    }
    for row in report.rows:
        assert row.errors == 0, row
        assert row.requests_per_s > 0
        assert row.rows_per_s == pytest.approx(row.requests_per_s * row.batch)
    assert set(report.ceiling_rows_per_s) == {1, 4}
    table = format_report(report)
    assert "x naive" in table
    assert "ceiling" in table
