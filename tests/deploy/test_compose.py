"""docker-compose.yml and .env.example: valid compose, real paths, real settings, agreeing ports.

The file is validated against the compose specification with check-jsonschema's built-in
schema, and everything it refers to is checked against the files and settings classes it names;
tests/deploy/test_stack.py runs the stack itself where a Docker engine answers. The agreement
test reads monitoring/prometheus/prometheus.yml and the
Grafana provisioning; when those files are missing it fails (they are part of the stack).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.helpers import (
    ROOT,
    MissingVariable,
    as_list,
    command_flags,
    compose_variables,
    environment_of,
    interpolate,
    load_compose,
    settings_for,
    venv_tool,
)

COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_YML = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
DATASOURCE_YML = ROOT / "monitoring" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARDS_YML = ROOT / "monitoring" / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"

#: The services of the stack and the port each listens on inside its container.
CONTAINER_PORTS = {
    "probserve": 8000,
    "drift-monitor": 9108,
    "pushgateway": 9091,
    "prometheus": 9090,
    "grafana": 3000,
    "evidently-ui": 8000,
    "probserve-gpu": 8000,
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def test_compose_file_validates_against_the_compose_specification() -> None:
    result = subprocess.run(
        [venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stack_has_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {*CONTAINER_PORTS, "postgres", "trainer", "loadgen"}
    assert services["loadgen"]["profiles"] == ["loadgen"]
    assert services["probserve-gpu"]["profiles"] == ["gpu"]
    # Everything else comes up with a plain `docker compose up`.
    plain = {name for name, s in services.items() if not s.get("profiles")}
    assert plain == set(services) - {"loadgen", "probserve-gpu"}


def _published(service: dict[str, Any], env: dict[str, str] | None = None) -> dict[int, str]:
    """container port -> "HOST_IP:HOST_PORT" of a service's `ports` (short form), interpolated."""
    mapping = {}
    for entry in service.get("ports", []):
        text = interpolate(str(entry), env)
        host, _, container = text.rpartition(":")
        mapping[int(container)] = host
    return mapping


def test_ports_are_the_documented_ones(services: dict[str, dict[str, Any]]) -> None:
    from service.settings import Settings

    for name, port in CONTAINER_PORTS.items():
        assert port in _published(services[name]), f"{name} does not publish {port}"
    hosts = [h for s in services.values() for h in _published(s).values()]
    assert len(hosts) == len(set(hosts)), "two services publish the same host port"
    assert _published(services["evidently-ui"]) == {8000: "127.0.0.1:8003"}
    # The service's gRPC port where Triton and KServe clients look for it; the GPU one beside.
    grpc = Settings.model_fields["grpc_port"].default
    assert _published(services["probserve"]) == {8000: "127.0.0.1:8000", grpc: "127.0.0.1:8001"}
    assert _published(services["probserve-gpu"])[grpc] == "127.0.0.1:8004"


def test_ports_are_published_on_loopback_unless_the_user_says_otherwise(
    services: dict[str, dict[str, Any]],
) -> None:
    # A port published without an address listens on every interface of the laptop.
    for name, service in services.items():
        for entry in service.get("ports", []):
            published = interpolate(str(entry))
            assert published.count(":") == 2, f"{name}: {entry} names no host address"
        for container, host in _published(service).items():
            assert host.startswith("127.0.0.1:"), f"{name}: {container} published on {host}"
        # One variable moves them all, for a user who means to expose the stack.
        for host in _published(service, {"PUBLISH_HOST": "0.0.0.0"}).values():
            assert host.startswith("0.0.0.0:"), f"{name}: {host} ignores PUBLISH_HOST"
    # The prediction log's database is reached by the stack only, never from outside.
    assert "ports" not in services["postgres"]


#: A variable holds a secret when its name says so.
_SECRET = re.compile(r"PASSWORD|TOKEN|SECRET")


def test_no_secret_has_a_working_default() -> None:
    text = COMPOSE.read_text()
    secrets = {name for name in compose_variables(text) if _SECRET.search(name)}
    assert secrets == {"POSTGRES_PASSWORD", "PROBSERVE_ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD"}
    for match in re.finditer(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", text):
        name, operator, default = match.groups()
        if name not in secrets:
            continue
        # Either required (compose refuses to start without it) or empty by default.
        assert operator == ":?" or (operator == ":-" and not default), f"{match.group(0)}"
    # Without the required secrets `docker compose up` refuses, naming what to set.
    with pytest.raises(MissingVariable, match=r"POSTGRES_PASSWORD: set POSTGRES_PASSWORD in \.env"):
        interpolate(text, {"GRAFANA_ADMIN_PASSWORD": "x"})
    with pytest.raises(MissingVariable, match="GRAFANA_ADMIN_PASSWORD"):
        interpolate(text, {"POSTGRES_PASSWORD": "x"})
    # No literal password sits in the file either (a URL with user:password@).
    assert not re.search(r"://\w+:\w+@", text)
    # .env.example gives no secret a value a user could leave as it is.
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, _, value = line.partition("=")
        if not line.startswith("#") and _SECRET.search(name):
            assert value == "", f".env.example gives {name} a value: {value!r}"


def test_the_admin_token_defaults_to_empty_which_turns_model_control_off(
    services: dict[str, dict[str, Any]],
) -> None:
    from service.settings import Settings

    token = environment_of(services["probserve"])["PROBSERVE_ADMIN_TOKEN"]
    assert token == ""
    assert Settings(admin_token=token).admin_token_value() is None


def test_mounted_paths_and_build_contexts_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), f"{name}: build context {build['context']} missing"
            assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']}"
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which does not exist"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    used = {
        str(v).split(":")[0]
        for s in compose["services"].values()
        for v in s.get("volumes", [])
        if not str(v).startswith((".", "/"))
    }
    assert used == declared


#: The trainer image's entrypoint script ends in `exec probserve train --model-repository ...`.
TRAIN_SCRIPT = ["train-if-empty"]


def _command_of(
    service: dict[str, Any], images: dict[str, tuple[list[str], list[str]]]
) -> list[str]:
    """What the container runs: entrypoint + command, the image's when the service gives none."""
    entrypoint, default_command = images.get(str(service.get("image")), ([], []))
    if service.get("entrypoint") is not None:
        entrypoint, default_command = as_list(service["entrypoint"]), []
    command = as_list(service["command"]) if "command" in service else default_command
    if entrypoint == TRAIN_SCRIPT:
        script = (ROOT / "docker" / "train-if-empty.sh").read_text()
        assert 'exec probserve train --model-repository "$repository" "$@"' in script
        entrypoint = ["probserve", "train", "--model-repository=/models"]
    return entrypoint + command


def _image_entrypoints(
    services: dict[str, dict[str, Any]],
) -> dict[str, tuple[list[str], list[str]]]:
    """image name -> (ENTRYPOINT, CMD) of the Dockerfile stage that builds it."""
    from tests.deploy.helpers import read_dockerfile

    result = {}
    for service in services.values():
        build = service.get("build")
        if not build:
            continue
        dockerfile = read_dockerfile(ROOT / build["context"] / build["dockerfile"])
        stage = dockerfile.stage(build["target"]) if "target" in build else dockerfile.stages[-1]
        words = []
        for keyword in ["ENTRYPOINT", "CMD"]:
            found = stage.all(keyword)
            words.append([str(w) for w in yaml.safe_load(found[0].value)] if found else [])
        result[str(service["image"])] = (words[0], words[1])
    return result


def test_every_probserve_variable_is_a_setting_of_the_command_it_runs(
    services: dict[str, dict[str, Any]],
) -> None:
    images = _image_entrypoints(services)
    checked = 0
    for name, service in services.items():
        env = {k for k in environment_of(service) if k.startswith("PROBSERVE_")}
        if not env:
            continue
        command = _command_of(service, images)
        known = settings_for(command)
        assert known is not None, f"{name} sets {sorted(env)} but runs {command}, not probserve"
        assert env <= known, f"{name} ({' '.join(command[:3])}): not settings: {env - known}"
        checked += 1
    assert checked >= 3  # probserve, probserve-gpu, drift-monitor


def test_service_uses_postgres_and_waits_for_trainer_and_database(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ["probserve", "probserve-gpu"]:
        service = services[name]
        assert service["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        url = urlsplit(environment_of(service)["PROBSERVE_PREDICTION_LOG_URL"])
        assert url.scheme == "postgresql"
        assert (url.hostname, url.port) == ("postgres", 5432)
    postgres = services["postgres"]
    env = environment_of(postgres)
    url = urlsplit(environment_of(services["probserve"])["PROBSERVE_PREDICTION_LOG_URL"])
    assert (url.username, url.password, url.path) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        "/" + env["POSTGRES_DB"],
    )
    assert "pg_isready" in " ".join(as_list(postgres["healthcheck"]["test"]))
    # The drift monitor reads the same log.
    drift = environment_of(services["drift-monitor"])["PROBSERVE_PREDICTION_LOG_URL"]
    assert drift == environment_of(services["probserve"])["PROBSERVE_PREDICTION_LOG_URL"]


def test_gpu_profile_reserves_an_nvidia_device(services: dict[str, dict[str, Any]]) -> None:
    gpu = services["probserve-gpu"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert environment_of(gpu)["PROBSERVE_PROVIDERS"] == "cuda"


def test_loadgen_runs_the_script_baked_into_the_image(services: dict[str, dict[str, Any]]) -> None:
    loadgen = services["loadgen"]
    command = _command_of(loadgen, {})
    assert command[:2] == ["python", "/opt/probserve/loadgen.py"]
    assert (
        "COPY docker/loadgen.py /opt/probserve/loadgen.py"
        in (ROOT / "docker" / "Dockerfile").read_text()
    )
    url = next(a for a in command if a.startswith("--url="))
    assert urlsplit(url.removeprefix("--url=")).port == CONTAINER_PORTS["probserve"]


def test_env_example_covers_every_variable_the_compose_file_reads() -> None:
    example = {
        line.partition("=")[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert compose_variables(COMPOSE.read_text()) == example


def test_grafana_has_anonymous_viewers_and_its_password_from_env(
    services: dict[str, dict[str, Any]],
) -> None:
    env = environment_of(services["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    raw = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert raw.startswith("${GRAFANA_ADMIN_PASSWORD")


# -- agreement with monitoring/: Prometheus scrape targets and the Grafana datasource -------------


def _mount_target(service: dict[str, Any], source: str) -> str:
    for volume in service.get("volumes", []):
        parts = str(volume).split(":")
        if parts[0] == source:
            return parts[1]
    raise AssertionError(f"{source} is not mounted")


def _load(path: Path) -> Any:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: the compose stack mounts it"
    return yaml.safe_load(path.read_text())


def test_prometheus_scrapes_the_stack_at_its_compose_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    config = _load(PROMETHEUS_YML)
    targets: dict[str, tuple[str, int]] = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                assert host in services, f"job {job['job_name']}: {host} is no compose service"
                assert int(port) == CONTAINER_PORTS[host], (
                    f"{target}: {host} listens on another port"
                )
                targets[host] = (job.get("metrics_path", "/metrics"), int(port))
    for needed in ["probserve", "drift-monitor", "pushgateway"]:
        assert needed in targets, f"prometheus.yml does not scrape {needed}"
        assert targets[needed][0] == "/metrics"


def test_prometheus_rule_files_are_inside_the_mounted_directory(
    services: dict[str, dict[str, Any]],
) -> None:
    config = _load(PROMETHEUS_YML)
    target = _mount_target(services["prometheus"], "./monitoring/prometheus")
    command = as_list(services["prometheus"]["command"])
    assert f"--config.file={target}/prometheus.yml" in command
    patterns = config.get("rule_files", [])
    assert patterns, "prometheus.yml loads no rule files"
    for pattern in patterns:
        relative = pattern.removeprefix(target + "/") if pattern.startswith("/") else pattern
        assert not relative.startswith("/"), f"{pattern} is outside the mounted {target}"
        found = list((ROOT / "monitoring" / "prometheus").glob(relative))
        assert found, f"rule_files {pattern} matches nothing in monitoring/prometheus/"


def test_grafana_datasource_points_at_the_compose_prometheus(
    services: dict[str, dict[str, Any]],
) -> None:
    config = _load(DATASOURCE_YML)
    (source,) = [d for d in config["datasources"] if d["type"] == "prometheus"]
    assert source["uid"] == "prometheus"
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus" and url.port == CONTAINER_PORTS["prometheus"]
    assert _mount_target(services["grafana"], "./monitoring/grafana/provisioning") == (
        "/etc/grafana/provisioning"
    )


def test_grafana_dashboard_provider_reads_the_mounted_dashboards(
    services: dict[str, dict[str, Any]],
) -> None:
    config = _load(DASHBOARDS_YML)
    mounted = _mount_target(services["grafana"], "./monitoring/grafana/dashboards")
    paths = [p["options"]["path"] for p in config["providers"]]
    assert mounted in paths, f"no dashboard provider reads {mounted}: {paths}"
    dashboards = sorted((ROOT / "monitoring" / "grafana" / "dashboards").glob("*.json"))
    assert dashboards, "no dashboards to provision"
    # Every panel's datasource is the provisioned one (by uid), or a template variable.
    for path in dashboards:
        text = path.read_text()
        for ref in re.findall(r'"datasource"\s*:\s*\{[^}]*"uid"\s*:\s*"([^"]+)"', text):
            assert ref == "prometheus" or ref.startswith("$"), f"{path.name}: datasource {ref}"


def test_interpolation_helper_follows_compose_rules() -> None:
    # The helper the tests above lean on: ${VAR:-default}, ${VAR} and $$ as compose reads them.
    assert interpolate("${A:-x}/${B}/$$C", {"B": "b"}) == "x/b/$C"
    assert interpolate("${A:-x}", {"A": "a"}) == "a"
    assert interpolate("${A:-x}|${A-x}", {"A": ""}) == "x|"
    assert interpolate("${A:?gone}", {"A": "a"}) == "a"
    with pytest.raises(MissingVariable, match="A: gone"):
        interpolate("${A:?gone}", {"A": ""})
    assert interpolate("${A?gone}", {"A": ""}) == ""


def test_every_flag_passed_to_probserve_is_an_option_of_that_command(
    services: dict[str, dict[str, Any]],
) -> None:
    images = _image_entrypoints(services)
    checked = 0
    for name, service in services.items():
        flags = command_flags(_command_of(service, images))
        if flags is None:
            continue
        given, accepted = flags
        assert given <= accepted, f"{name}: unknown flags {given - accepted}"
        checked += 1
    assert checked >= 4  # probserve, probserve-gpu, drift-monitor, trainer
