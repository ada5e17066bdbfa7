"""monitoring/prometheus: promtool checks, the rules' unit tests, and a real Prometheus
evaluating the recording rules on a scraped exposition (see docs/architecture.md, "Monitoring")."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from monitoring.drift.metrics import DriftMetrics
from monitoring.drift.summary import (
    ColumnDrift,
    ConformalFigures,
    Disparity,
    DriftSummary,
    Estimate,
    FairnessFigures,
    GroupFigures,
    Pair,
    SensitiveFigures,
    Window,
)
from tests.monitoring.prometheus_support import (
    MATCH_ALL,
    PROMETHEUS_DIR,
    RATE_INTERVAL,
    PrometheusError,
    PrometheusFactory,
    alert_data_expression,
    all_expressions,
    dashboard_expressions,
    rule_expressions,
    rule_files,
    substitute,
    variable_expression,
)
from tests.support import free_port, require_program

CONFIG = PROMETHEUS_DIR / "prometheus.yml"
UNIT_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
RUNBOOK = PROMETHEUS_DIR / "RUNBOOK.md"
SEVERITIES = {"critical", "warning"}
#: The alerts on the drift job's figures.
MODEL_HEALTH_ALERTS = {
    "ProbserveDatasetDrift",
    "ProbserveEstimatedAccuracyDrop",
    "ProbserveCalibrationBroken",
    "ProbserveIntervalWidthUp",
    "ProbserveDriftJobStale",
    "ProbserveFairnessDisparity",
}


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    """Run promtool; its output is in the result for assertion messages."""
    program = require_program("promtool")
    return subprocess.run(
        [program, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def alerts() -> list[dict[str, Any]]:
    """Every alerting rule of the repository."""
    return [
        rule
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def recording_rules() -> list[dict[str, Any]]:
    """Every recording rule of the repository."""
    return [
        rule
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]


# --- promtool ---------------------------------------------------------------------------------


def test_config_is_valid_and_finds_its_rule_files_from_any_directory(tmp_path: Path) -> None:
    # rule_files are relative to prometheus.yml, not to the working directory.
    result = promtool("check", "config", str(CONFIG), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_files())} rule files found" in result.stdout + result.stderr


def test_rule_files_are_valid() -> None:
    assert rule_files(), "monitoring/prometheus/rules/*.yml is missing"
    result = promtool("check", "rules", *map(str, rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    assert UNIT_TESTS, "monitoring/prometheus/tests/*.yml is missing"
    result = promtool("test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    # The unit tests can fail: with the 5xx threshold raised from 5% to 50%, toy's 16.67% no
    # longer fires and promtool says so.
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    alerts_file = copy / "rules" / "alerts.yml"
    text = alerts_file.read_text()
    changed = text.replace("model:probserve_requests_5xx:ratio_rate5m > 0.05", "x > 0.5", 1)
    changed = changed.replace("x > 0.5", "model:probserve_requests_5xx:ratio_rate5m > 0.5")
    assert changed != text
    alerts_file.write_text(changed)
    result = promtool("test", "rules", *[str(copy / "tests" / p.name) for p in UNIT_TESTS])
    assert result.returncode != 0
    assert "ProbserveHighErrorRatio" in result.stdout + result.stderr


# --- rule conventions -------------------------------------------------------------------------


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names, "no alerts"
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - names == set(), "unit tests for alerts that do not exist"


def test_every_alert_has_severity_annotations_and_a_runbook_section() -> None:
    headings = re.findall(r"^## (\S+)\s*$", RUNBOOK.read_text(), re.MULTILINE)
    anchors = {h.lower() for h in headings}
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "monitoring/prometheus/RUNBOOK.md", name
        assert anchor == name.lower() and anchor in anchors, f"{name}: no RUNBOOK.md section"
    assert sorted(headings) == sorted(names), "RUNBOOK.md sections and alerts differ"


def test_recording_rules_follow_level_metric_operations_naming() -> None:
    names = [rule["record"] for rule in recording_rules()]
    assert names and len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", name), name
    for quantile in ("p50", "p95", "p99"):
        assert f"model:probserve_request_duration_seconds:{quantile}_rate5m" in names


def test_scrape_config_names_the_stack_and_keeps_pushed_labels() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for job in jobs.values() for s in job["static_configs"] for t in s["targets"]}
    assert targets == {"probserve:8000", "drift-monitor:9108", "pushgateway:9091"}
    (pushgateway,) = [j for j in jobs.values() if "pushgateway:9091" in str(j)]
    assert pushgateway["honor_labels"] is True  # keeps job="probserve_drift" as pushed
    assert all(not p.startswith("/") for p in config["rule_files"])


# --- expression helpers -----------------------------------------------------------------------


def test_substitute_replaces_template_and_interval_variables() -> None:
    expr = 'rate(x{model=~"$model",v=~"${version}",c=~"[[cls]]"}[$__rate_interval])'
    assert substitute(expr) == (
        f'rate(x{{model=~"{MATCH_ALL}",v=~"{MATCH_ALL}",c=~"{MATCH_ALL}"}}[{RATE_INTERVAL}])'
    )
    assert substitute("sum(x)") == "sum(x)"


def test_variable_queries_become_the_series_they_need() -> None:
    assert variable_expression("label_values(probserve_model_ready, model)") == (
        "probserve_model_ready"
    )
    assert variable_expression("label_values(model)") == '{model=~".+"}'


def test_alert_data_expression_keeps_the_operands_of_each_comparison() -> None:
    assert alert_data_expression("a - b > 0.05") == "a - b > bool 0.05"
    assert alert_data_expression("x == 0") == "x == bool 0"
    assert alert_data_expression("x{w='c'}\n  / ignoring (w) y\n> 1.25\n") == (
        "x{w='c'}\n  / ignoring (w) y > bool 1.25"
    )
    assert alert_data_expression('x{m!=""} > 0\nor\n(x unless x offset 5m) > 0') == (
        'x{m!=""} > bool 0\nor\n(x unless x offset 5m) > bool 0'
    )
    with pytest.raises(ValueError, match="comparison"):
        alert_data_expression("rate(x[5m])")


def test_expression_lists_cover_every_panel_target_and_rule(tmp_path: Path) -> None:
    rules = rule_expressions()
    assert len(rules) == len(alerts()) + len(recording_rules())
    assert sum(" bool " in e.expr for e in rules) == len(alerts())
    board = dashboard_expressions()
    assert all(e.expr.strip() and "$" not in e.expr for e in board)
    everything = all_expressions()
    assert everything == [*board, *rules]
    # Each one parses (promtool check rules parses every rule's expression).
    records = [{"record": f"check:expr:{i}", "expr": e.expr} for i, e in enumerate(everything)]
    path = tmp_path / "all.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "all", "rules": records}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --- a real Prometheus ------------------------------------------------------------------------


class FakeService(Collector):
    """The service's request histogram and prediction counter, growing by one step per scrape,
    so every rate is positive and all series grow in the same proportion.

    Per step: toy gets 3 requests answered 2xx and 1 answered 5xx, all taking 0.3 s (bucket
    (0.25, 0.5]), and 8 predicted instances; the readyz route (model="") gets 100 fast requests.
    """

    def __init__(self) -> None:
        self.steps = 0

    def collect(self) -> Iterable[Metric]:
        """One more step, then the exposition."""
        self.steps += 1
        n = float(self.steps)
        hist = HistogramMetricFamily(
            "probserve_request_duration_seconds",
            "HTTP request duration.",
            labels=["model", "version", "protocol", "endpoint", "code"],
        )
        for code, count in (("2xx", 3 * n), ("5xx", n)):
            hist.add_metric(
                ["toy", "1", "v1", "v1_predict", code],
                [("0.25", 0.0), ("0.5", count), ("+Inf", count)],
                0.3 * count,
            )
        hist.add_metric(
            ["", "", "", "readyz", "2xx"],
            [("0.25", 100 * n), ("0.5", 100 * n), ("+Inf", 100 * n)],
            0.001 * 100 * n,
        )
        yield hist
        predictions = CounterMetricFamily(
            "probserve_predictions", "Predicted instances.", labels=["model", "version", "class"]
        )
        predictions.add_metric(["toy", "1", "a"], 8 * n)
        yield predictions


def value(result: list[dict[str, Any]]) -> float:
    """The single sample's value of an instant query."""
    assert len(result) == 1, result
    return float(result[0]["value"][1])


@pytest.mark.slow
def test_real_prometheus_evaluates_the_recording_rules(
    prometheus_factory: PrometheusFactory,
) -> None:
    registry = CollectorRegistry()
    registry.register(FakeService())
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus = prometheus_factory([f"127.0.0.1:{port}"])
        # Recording rules need two scrapes for a rate; then the quantile is fixed by the buckets:
        # p99 = 0.25 + 0.25 * 0.99 = 0.4975, p50 = 0.375; readyz's fast requests are left out.
        p99 = prometheus.wait_for("model:probserve_request_duration_seconds:p99_rate5m > 0")
        assert p99[0]["metric"] == {
            "__name__": "model:probserve_request_duration_seconds:p99_rate5m",
            "model": "toy",
        }
        assert value(p99) == pytest.approx(0.4975, abs=1e-9)
        p50 = prometheus.query("model:probserve_request_duration_seconds:p50_rate5m")
        assert value(p50) == pytest.approx(0.375, abs=1e-9)
        # 1 of 4 requests is 5xx; 8 instances per 4 requests.
        ratio = prometheus.wait_for("model:probserve_requests_5xx:ratio_rate5m")
        assert value(ratio) == pytest.approx(0.25, abs=1e-9)
        per_request = prometheus.wait_for(
            "model:probserve_predictions:rate5m / model:probserve_requests:rate5m"
        )
        assert value(per_request) == pytest.approx(2.0, abs=1e-9)
        assert list(prometheus.targets_up().values()) == [True]
        with pytest.raises(PrometheusError, match="bad_data"):
            prometheus.query("sum(")
    finally:
        server.shutdown()
        thread.join(timeout=10)


def fairness(estimated: float, realized: float, gap: float) -> FairnessFigures:
    """Two groups of a context column "region"; group b is ``gap`` below group a."""

    def group(shift: float) -> GroupFigures:
        figures = {
            "selection_rate_yes": Estimate(value=0.5, low=0.4, high=0.6, rows=250),
            "estimated_accuracy": Estimate(value=estimated - shift, low=None, high=None, rows=250),
            "realized_accuracy": Estimate(value=realized - shift, low=None, high=None, rows=50),
        }
        return GroupFigures(rows=250, labelled_rows=50, too_small=False, figures=figures)

    gaps = {
        name: Disparity(difference=gap, ratio=(value - gap) / value, lowest="b", highest="a")
        for name, value in (("estimated_accuracy", estimated), ("realized_accuracy", realized))
    }
    column = SensitiveFigures(
        source="context", groups={"a": group(0.0), "b": group(gap)}, disparity=gaps
    )
    return FairnessFigures(
        min_group_rows=30, confidence=0.95, bootstrap_rows=20_000, columns={"region": column}
    )


def drift_summary(
    model: str, *, drifted: bool, estimated: float, realized: float, width: float
) -> DriftSummary:
    """A summary with two compared columns (x1 drifted when ``drifted``), and two groups of a
    sensitive column whose accuracy differs by 0.2 when ``drifted`` (0.02 when not)."""
    return DriftSummary(
        model=model,
        reference_version=1,
        versions=["1"],
        window=Window(),
        rows_current=500,
        rows_reference=2000,
        sampled=False,
        dataset_drift=drifted,
        share_drifted=0.5 if drifted else 0.0,
        columns={
            "x1": ColumnDrift(drift_detected=drifted, score=0.001, method="ks", threshold=0.05),
            "x2": ColumnDrift(drift_detected=False, score=0.4, method="ks", threshold=0.05),
        },
        estimated_accuracy=estimated,
        realized_accuracy=realized,
        labelled_rows=100,
        expected_calibration_error=0.02,
        mean_interval_width=Pair(reference=0.2, current=width),
        ambiguous_share=Pair(reference=0.1, current=0.3 if drifted else 0.1),
        warnings=[],
        conformal=ConformalFigures(
            labelled_rows=100,
            static_coverage=0.78 if drifted else 0.9,
            static_mean_set_size=1.3,
            adapted_revision=None,
            adapted_coverage=None,
            adapted_mean_set_size=None,
            published_revision=None,
        ),
        fairness=fairness(estimated, realized, 0.2 if drifted else 0.02),
    )


@pytest.mark.slow
def test_model_health_dashboard_and_alerts_read_the_drift_monitors_metrics(
    prometheus_factory: PrometheusFactory,
) -> None:
    # The drift job's own exporter (DriftMetrics) for two models: "bad" trips every model-health
    # alert's condition, "good" none. Every model-health dashboard query returns data, and each
    # alert's condition (as a bool comparison) is 1 for bad and 0 for good: the alerts match the
    # exporter's real label sets (window="reference|current", job/instance as scraped).
    metrics = DriftMetrics()
    now = time.time()
    metrics.record(
        drift_summary("bad", drifted=True, estimated=0.80, realized=0.60, width=0.4),
        reference_accuracy=0.95,
        finished_at=now - 7200,  # two hours ago: stale
    )
    metrics.record(
        drift_summary("good", drifted=False, estimated=0.94, realized=0.93, width=0.21),
        reference_accuracy=0.95,
        finished_at=now + 3600,  # an hour ahead of the clock: fresh while the test runs
    )
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        prometheus = prometheus_factory([f"127.0.0.1:{port}"])
        prometheus.wait_for("probserve_drift_share")
        for e in dashboard_expressions():
            if e.source.startswith("probserve-model-health.json"):
                assert prometheus.query(e.expr), f"{e.source}: no data for {e.expr}"
        conditions = [e for e in rule_expressions() if e.source.split()[-1] in MODEL_HEALTH_ALERTS]
        assert len(conditions) == len(MODEL_HEALTH_ALERTS)
        for e in conditions:
            by_model = {r["metric"]["model"]: r["value"][1] for r in prometheus.query(e.expr)}
            assert by_model == {"bad": "1", "good": "0"}, f"{e.source}: {by_model}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
