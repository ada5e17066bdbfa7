"""A real Prometheus for tests, and every PromQL expression the repository ships.

``PrometheusServer`` runs Debian's ``prometheus`` binary on a free 127.0.0.1 port in a temporary
directory, scraping the given targets every second and evaluating the repository's rule files
(monitoring/prometheus/rules/) every second, so recording rules and alerts see fresh data within
seconds. ``prometheus_factory`` is the pytest fixture that starts one and always stops it;
tests/monitoring/conftest.py offers it, and a conftest elsewhere gets it with
``from tests.monitoring.prometheus_support import prometheus_factory``.

``all_expressions()`` lists the expressions of both Grafana dashboards (template variables
replaced by a regex matching everything, ``$__rate_interval`` by 30s) and of every rule (an
alert's comparisons made ``bool``, so a quiet alert still returns its inputs), so an
end-to-end test can run each against the server and require data (see docs/architecture.md,
"Monitoring").
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import free_port, require_program

ROOT = Path(__file__).resolve().parent.parent.parent
PROMETHEUS_DIR = ROOT / "monitoring" / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
DASHBOARDS_DIR = ROOT / "monitoring" / "grafana" / "dashboards"

#: What a dashboard's ``$__rate_interval`` (and friends) becomes outside Grafana: long enough to
#: hold several 1 s scrapes, short enough that a test's fresh traffic dominates it.
RATE_INTERVAL = "30s"
#: Grafana's own interval variables, substituted by RATE_INTERVAL.
GRAFANA_INTERVALS = ("__rate_interval", "__interval", "__range")
#: What a template variable (``$model``) becomes: every value, as Grafana's "All" (allValue ".*").
MATCH_ALL = ".*"

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
#: A comparison with a number literal (label matchers compare with quoted strings, never this).
_NUMBER_COMPARISON = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*([-+]?[0-9][0-9.eE+-]*)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.+),)?\s*(\w+)\s*\)\s*$", re.DOTALL)


class PrometheusError(RuntimeError):
    """Prometheus refused a query or did not start; the message says why in one line."""


def rule_files() -> list[Path]:
    """The repository's rule files, in a stable order."""
    return sorted([*RULES_DIR.glob("*.yml"), *RULES_DIR.glob("*.yaml")])


def dashboard_files() -> list[Path]:
    """The repository's Grafana dashboards, in a stable order."""
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def substitute(expr: str) -> str:
    """A dashboard expression as Prometheus can run it: Grafana's interval variables become
    RATE_INTERVAL, every other template variable ($model, ${model}, [[model]]) MATCH_ALL."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return RATE_INTERVAL if name in GRAFANA_INTERVALS else MATCH_ALL

    return _VARIABLE.sub(replace, expr)


def variable_expression(query: str) -> str:
    """The PromQL behind a template variable's query: ``label_values(metric, label)`` needs
    ``metric`` to have data; ``label_values(label)`` needs any series with that label."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        return substitute(query)  # query_result(...) and plain PromQL are not used here
    metric, label = match.group(1), match.group(2)
    return substitute(metric.strip()) if metric else f'{{{label}=~".+"}}'


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from (file, panel or rule)."""

    source: str
    expr: str


def _panels(panels: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # panels inside collapsed rows


def dashboard_expressions() -> list[Expression]:
    """Every target expression and template-variable query of both dashboards, runnable."""
    found: list[Expression] = []
    for path in dashboard_files():
        board = json.loads(path.read_text())
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            source = f"{path.name} variable {variable['name']}"
            found.append(Expression(source, variable_expression(text)))
        for panel in _panels(board.get("panels", [])):
            for target in panel.get("targets", []):
                source = (
                    f"{path.name} panel {panel['id']} ({panel.get('title', '')}) {target['refId']}"
                )
                found.append(Expression(source, substitute(target.get("expr", ""))))
    return found


def alert_data_expression(expr: str) -> str:
    """An alert's expression with every comparison against a number made a ``bool`` one
    (``x > 0.5`` becomes ``x > bool 0.5``): it returns 0 or 1 for every series the alert
    watches, so "returns data" means the alert's inputs exist, not that it fires. Comparisons
    bind looser than arithmetic, so ``a - b > 0.05`` stays ``(a - b) > bool 0.05``."""
    converted, count = _NUMBER_COMPARISON.subn(r" \1 bool \2", expr.strip())
    if count == 0:
        raise ValueError(f"alert expression has no comparison with a number: {expr!r}")
    return converted


def rule_expressions() -> list[Expression]:
    """Every recording rule's expression as written, and every alert's through
    ``alert_data_expression`` (a quiet alert's own expression returns nothing)."""
    found: list[Expression] = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                expr = str(rule["expr"]).strip()
                if "alert" in rule:
                    source = f"{path.name} alert {rule['alert']}"
                    found.append(Expression(source, alert_data_expression(expr)))
                else:
                    found.append(Expression(f"{path.name} record {rule['record']}", expr))
    return found


def all_expressions() -> list[Expression]:
    """Dashboard expressions followed by rule expressions."""
    return [*dashboard_expressions(), *rule_expressions()]


def prometheus_config(targets: Sequence[str], rules: Sequence[Path]) -> dict[str, Any]:
    """A configuration scraping each ``host:port`` target (its own job) every second."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(p) for p in rules],
        "scrape_configs": [
            {
                "job_name": f"target{i}",
                "honor_labels": True,  # as for the Pushgateway in prometheus.yml
                "static_configs": [{"targets": [target]}],
            }
            for i, target in enumerate(targets)
        ],
    }


class PrometheusServer:
    """A running ``prometheus`` process; ``stop()`` ends it (the fixture does that)."""

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[str],
        rules: Sequence[Path] | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        """Start prometheus in ``workdir`` scraping ``targets``; wait until it is ready."""
        program = require_program("prometheus")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(targets, rules or rule_files())))
        self._log = (workdir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                program,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready(startup_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PrometheusError(f"prometheus exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {timeout_s} s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's log, for failure messages."""
        self._log.flush()
        text = (self.workdir / "prometheus.log").read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:])

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant-query result of ``expr`` now: a list of ``{"metric": {...}, "value":
        [t, "v"]}``; an empty list means no data. A refused query raises PrometheusError."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        if body.get("status") != "success":
            raise PrometheusError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def wait_for(self, expr: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Query ``expr`` until it returns data; PrometheusError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if not result:
            raise PrometheusError(f"{expr!r} returned no data within {timeout_s} s")
        return result

    def targets_up(self) -> dict[str, bool]:
        """Each scrape target's instance and whether its last scrape succeeded."""
        return {r["metric"]["instance"]: r["value"][1] == "1" for r in self.query("up")}

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and close its log."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


PrometheusFactory = Callable[..., PrometheusServer]
"""``factory(targets, rules=None)``: a started PrometheusServer, stopped at teardown."""


@pytest.fixture
def prometheus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    """Start real Prometheus servers scraping ``host:port`` targets every second; each one
    loads the repository's rule files unless ``rules`` names others. All stop at teardown."""
    require_program("prometheus")
    started: list[PrometheusServer] = []

    def start(targets: Sequence[str], rules: Sequence[Path] | None = None) -> PrometheusServer:
        workdir = tmp_path_factory.mktemp("prometheus")
        server = PrometheusServer(workdir, targets, rules)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
