"""Benchmark code lives in bench/ alone: no image copies it; `probserve bench` is found there."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

import bench.harness.cli
from tests.deploy.helpers import ROOT, read_dockerfile

DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile*"))
BENCH = ROOT / "bench"


def _copied_sources(path: Path) -> list[Path]:
    """What a Dockerfile copies from the build context (``COPY --from`` left out)."""
    sources = []
    for stage in read_dockerfile(path).stages:
        for copy in stage.all("COPY"):
            words = copy.value.split()
            if not any(w.startswith("--from") for w in words):
                sources += [ROOT / w for w in words[:-1] if not w.startswith("--")]
    return sources


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_image_copies_benchmark_code(path: Path) -> None:
    for source in _copied_sources(path):
        assert source != BENCH and BENCH not in source.parents, f"{path.name} copies {source}"
        if source.is_dir():
            stray = [p for p in source.rglob("*") if p.name in ("bench", "bench.py")]
            assert not stray, f"{path.name} copies benchmark code with {source.name}: {stray}"


def test_bench_stays_out_of_the_build_context() -> None:
    entries = (ROOT / ".dockerignore").read_text().splitlines()
    assert "bench" in entries


def test_probserve_bench_is_the_harness_in_bench() -> None:
    (entry,) = [ep for ep in entry_points(group="probserve.commands") if ep.name == "bench"]
    assert entry.value == "bench.harness.cli:bench"
    assert entry.load() is bench.harness.cli.bench
