"""Write one drift run: report.html, summary.json and a snapshot in an Evidently workspace."""

from __future__ import annotations

import html
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from monitoring.drift.computing import DriftResult

os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently telemetry off (docs/architecture.md)

from evidently.ui.workspace import Workspace

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"


def default_output(model: str, now: datetime | None = None) -> Path:
    """``./drift/<model>/<UTC timestamp>/``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path("drift") / model / stamp


def write_summary(result: DriftResult, output: Path) -> Path:
    """Write ``summary.json`` (strict JSON: no NaN) and return its path."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / SUMMARY_FILE
    text = json.dumps(result.summary.to_json_dict(), indent=2, allow_nan=False)
    path.write_text(text + "\n")
    return path


def write_report(result: DriftResult, output: Path) -> Path:
    """Write Evidently's self-contained ``report.html`` (inline scripts: opens offline)."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / REPORT_FILE
    if result.snapshot is not None:
        result.snapshot.save_html(str(path))
    else:  # every column went to the fallback: say so rather than write nothing
        body = html.escape(json.dumps(result.summary.to_json_dict(), indent=2))
        path.write_text(f"<!doctype html><title>drift</title><pre>{body}</pre>\n")
    return path


def add_to_workspace(result: DriftResult, workspace: Path) -> None:
    """Add the snapshot to the project named after the model (created on first use)."""
    if result.snapshot is None:
        return
    ws = Workspace.create(str(workspace))
    name = result.summary.model
    projects = ws.search_project(name)
    project = projects[0] if projects else ws.create_project(name, description=f"drift of {name}")
    ws.add_run(project.id, result.snapshot, include_data=False)
