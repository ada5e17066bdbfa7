"""monitoring/grafana: provisioning and the two dashboards, checked structurally (Grafana itself
does not install here; see docs/architecture.md, "Monitoring")."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.prometheus_support import (
    DASHBOARDS_DIR,
    GRAFANA_INTERVALS,
    ROOT,
    dashboard_expressions,
    dashboard_files,
)
from tests.support import require_program

PROVISIONING = ROOT / "monitoring" / "grafana" / "provisioning"
DATASOURCES = PROVISIONING / "datasources" / "prometheus.yml"
PROVIDERS = PROVISIONING / "dashboards" / "dashboards.yml"
SERVICE = DASHBOARDS_DIR / "probserve-service.json"
MODEL_HEALTH = DASHBOARDS_DIR / "probserve-model-health.json"

#: Variables Grafana defines itself.
BUILTIN_VARIABLES = {*GRAFANA_INTERVALS, "__all", "__range_s", "__range_ms", "__interval_ms"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")

#: What each dashboard must show, each in at least one query: throughput, latency percentiles,
#: errors, batching, uncertainty, the prediction log and model state (service); drift, accuracy
#: and the drift job's own health (model health). A metric no panel reads is one nobody sees.
SERVICE_METRICS = [
    "model:probserve_requests:rate5m",  # throughput
    "model:probserve_predictions:rate5m",
    "model:probserve_request_duration_seconds:p50_rate5m",
    "model:probserve_request_duration_seconds:p95_rate5m",
    "model:probserve_request_duration_seconds:p99_rate5m",
    "model:probserve_requests_5xx:ratio_rate5m",
    "probserve_errors_total",
    "probserve_batch_rows_bucket",
    "probserve_queue_wait_seconds_bucket",
    "probserve_inference_duration_seconds_bucket",
    "probserve_requests_in_flight",
    "probserve_predictions_total",
    "probserve_interval_width_bucket",
    "probserve_prediction_set_size_count",
    "probserve_prediction_log_rows_total",
    "probserve_prediction_log_queue_rows",
    "probserve_feedback_total",
    "probserve_model_info",
    "probserve_model_ready",
    "probserve_model_loaded_timestamp_seconds",
]
MODEL_HEALTH_METRICS = [
    "probserve_drift_score",
    "probserve_drift_detected",
    "probserve_drift_share",
    "probserve_dataset_drift",
    "probserve_estimated_accuracy",
    "probserve_realized_accuracy",
    "probserve_reference_accuracy",
    "probserve_mean_interval_width",
    "probserve_ambiguous_share",
    "probserve_drift_last_success_timestamp_seconds",
    "probserve_drift_rows",
    "probserve_fairness_group_rows",
    "probserve_fairness_selection_rate",
    "probserve_fairness_estimated_accuracy",
    "probserve_fairness_realized_accuracy",
    "probserve_fairness_disparity",
]


def load(path: Path) -> dict[str, Any]:
    """A dashboard file as JSON (strict: no NaN, no trailing commas)."""
    text = path.read_text()

    def refuse(constant: str) -> None:
        raise ValueError(f"{path.name}: {constant} is not JSON")

    board = json.loads(text, parse_constant=refuse)
    assert isinstance(board, dict)
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    stack = list(board.get("panels", []))
    while stack:
        panel = stack.pop(0)
        yield panel
        stack.extend(panel.get("panels", []))


def datasource_uids() -> set[str]:
    """The uids of the provisioned datasources."""
    config = yaml.safe_load(DATASOURCES.read_text())
    return {source["uid"] for source in config["datasources"]}


def used_variables(value: Any) -> Iterator[str]:
    """Every ``$var``, ``${var}`` or ``[[var]]`` in any string inside ``value``."""
    if isinstance(value, str):
        for match in _VARIABLE.finditer(value):
            yield match.group(1) or match.group(2) or match.group(3)
    elif isinstance(value, dict):
        for item in value.values():
            yield from used_variables(item)
    elif isinstance(value, list):
        for item in value:
            yield from used_variables(item)


@pytest.fixture(params=[SERVICE, MODEL_HEALTH], ids=lambda p: p.name)
def board(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each dashboard."""
    path: Path = request.param
    assert path.is_file(), f"{path.name} is missing"
    return load(path)


def test_the_two_dashboards_and_nothing_else() -> None:
    assert dashboard_files() == sorted([SERVICE, MODEL_HEALTH])
    uids = [load(p)["uid"] for p in dashboard_files()]
    assert len(uids) == len(set(uids))


def test_datasource_and_provider_provisioning() -> None:
    config = yaml.safe_load(DATASOURCES.read_text())
    (source,) = config["datasources"]
    assert (source["type"], source["uid"]) == ("prometheus", "prometheus")
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_panels_have_unique_ids_and_a_place_on_the_grid(board: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(board)]
    assert ids and len(ids) == len(set(ids)), ids
    for panel in panels(board):
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert grid["h"] > 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_datasource_is_the_provisioned_one(board: dict[str, Any]) -> None:
    uids = datasource_uids()
    variables = [v for v in board["templating"]["list"] if v["type"] == "query"]
    for item in [*panels(board), *variables]:
        if item.get("type") == "row":
            continue
        assert item["datasource"]["uid"] in uids, item.get("title", item.get("name"))
        for target in item.get("targets", []):
            assert target.get("datasource", item["datasource"])["uid"] in uids


def test_every_variable_is_defined_and_model_filters_the_queries(board: dict[str, Any]) -> None:
    defined = {v["name"] for v in board["templating"]["list"]}
    assert "model" in defined
    used = set(used_variables(board["panels"]))
    assert used - defined - BUILTIN_VARIABLES == set()
    model = next(v for v in board["templating"]["list"] if v["name"] == "model")
    assert model["query"]["query"].startswith("label_values(")
    assert model["includeAll"] and model["allValue"] == ".*"
    assert "model" in used


def test_every_query_is_non_empty(board: dict[str, Any]) -> None:
    for panel in panels(board):
        if panel.get("type") == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {panel['title']} {target['refId']}"
            assert target.get("refId")


@pytest.mark.parametrize(
    ("path", "metrics"), [(SERVICE, SERVICE_METRICS), (MODEL_HEALTH, MODEL_HEALTH_METRICS)]
)
def test_dashboards_show_what_the_issue_asks(path: Path, metrics: list[str]) -> None:
    exprs = " ".join(t["expr"] for p in panels(load(path)) for t in p.get("targets", []))
    missing = [m for m in metrics if not re.search(rf"(?<![\w:]){re.escape(m)}(?![\w:])", exprs)]
    assert missing == []


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    # promtool has no offline PromQL parser of its own, but `check rules` parses every rule's
    # expression: each substituted dashboard query becomes one recording rule.
    program = require_program("promtool")
    expressions = dashboard_expressions()
    rules = [{"record": f"dashboard:expr:{i}", "expr": e.expr} for i, e in enumerate(expressions)]
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [program, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_the_parse_check_can_fail(tmp_path: Path) -> None:
    program = require_program("promtool")
    path = tmp_path / "bad.yml"
    rule = {"record": "dashboard:expr:0", "expr": "sum by (model (rate(x[30s]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [rule]}]}))
    result = subprocess.run(
        [program, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
