"""Writing one run: summary.json, report.html (opens offline in Chromium), Evidently workspace."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from monitoring.drift.computing import DriftResult, compute_drift
from monitoring.drift.settings import DriftSettings
from monitoring.drift.writing import add_to_workspace, write_report, write_summary
from tests.monitoring.conftest import DriftBundle
from tests.support import require_program


def _result(bundle: DriftBundle, seed: int = 0, shift: float = 0.0) -> DriftResult:
    current = bundle.log_window(np.random.default_rng(seed), 200, x1_shift=shift, labelled=60)
    return compute_drift(bundle.manifest, 1, bundle.reference(), current, DriftSettings())


def test_summary_json_is_strict_and_round_trips(drift_bundle: DriftBundle, tmp_path: Path) -> None:
    result = _result(drift_bundle)
    path = write_summary(result, tmp_path / "out")
    text = path.read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["model"] == "toy"
    assert data["window"]["from"] is not None
    assert data["columns"]["x1"]["drift_detected"] in (True, False)


def test_workspace_keeps_one_project_per_model_with_history(
    drift_bundle: DriftBundle, tmp_path: Path
) -> None:
    from evidently.ui.workspace import Workspace

    workspace = tmp_path / "ws"
    add_to_workspace(_result(drift_bundle, 1), workspace)
    add_to_workspace(_result(drift_bundle, 2), workspace)
    ws = Workspace.create(str(workspace))
    projects = ws.search_project("toy")
    assert len(projects) == 1
    assert len(ws.list_runs(projects[0].id)) == 2


def _png_pixels(data: bytes) -> tuple[int, int, int, bytes]:
    """Width, height, bytes per pixel and the unfiltered pixel bytes of an 8-bit PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8, depth
    bpp = {2: 3, 6: 4, 0: 1, 4: 2}[colour]
    raw = zlib.decompress(idat)
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        out += line
        prev = line
    return width, height, bpp, bytes(out)


def _non_white_share(png: Path) -> float:
    width, height, bpp, pixels = _png_pixels(png.read_bytes())
    array = np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, bpp)[:, :, :3]
    return float(np.mean(array.min(axis=2) < 245))


def _screenshot(chromium: str, page: Path, out: Path, profile: Path) -> None:
    subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=8000",
            "--window-size=1280,1600", f"--screenshot={out}", page.as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
def test_report_html_renders_offline_in_chromium(drift_bundle: DriftBundle, tmp_path: Path) -> None:
    chromium = require_program("chromium")
    report = write_report(_result(drift_bundle, 3, shift=1.0), tmp_path / "out")
    assert '<script src="http' not in report.read_text()  # self-contained: no CDN script
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><title>blank</title>")
    _screenshot(chromium, blank, tmp_path / "blank.png", tmp_path / "profile-a")
    _screenshot(chromium, report, tmp_path / "report.png", tmp_path / "profile-b")
    # The check can fail: a blank page scores ~0, the rendered report's tables and plots do not.
    assert _non_white_share(tmp_path / "blank.png") < 0.001
    assert _non_white_share(tmp_path / "report.png") > 0.02
