"""k8s/: both overlays render with `kubectl kustomize`, every object validates against the
Kubernetes schemas of a stated version (kubernetes-validate) or, for the prometheus-operator
objects, against the operator's CRD schemas (vendored in schemas/), and the manifests agree with
the service's settings, the compose file and monitoring/.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.deploy.helpers import (
    KUBERNETES_VERSION,
    ROOT,
    command_flags,
    drift_env_names,
    load_compose,
    service_env_names,
)
from tests.support import require_program

OVERLAYS = ["cpu", "gpu"]
SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    "ServiceMonitor": SCHEMAS / "servicemonitor-v1.json",
    "PrometheusRule": SCHEMAS / "prometheusrule-v1.json",
}

Objects = list[dict[str, Any]]


def render(overlay: str) -> Objects:
    """The objects `kubectl kustomize k8s/overlays/<overlay>` prints."""
    kubectl = require_program("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, Objects]:
    return request.param, render(request.param)


@pytest.fixture(scope="module")
def cpu() -> Objects:
    return render("cpu")


@pytest.fixture(scope="module")
def gpu() -> Objects:
    return render("gpu")


def one(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def container(objects: Objects, deployment: str) -> dict[str, Any]:
    (found,) = one(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = found
    return result


def env_of(objects: Objects, c: dict[str, Any]) -> dict[str, Any]:
    """A container's environment: its ConfigMap envFrom entries, then its own env."""
    env: dict[str, Any] = {}
    for source in c.get("envFrom", []):
        env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in c.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


# -- schemas --------------------------------------------------------------------------------------


def test_overlays_render_the_expected_objects(rendered: tuple[str, Objects]) -> None:
    _, objects = rendered
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    for needed in [
        "Namespace/probserve",
        "ServiceAccount/probserve",
        "ConfigMap/probserve-settings",
        "PersistentVolumeClaim/probserve-models",
        "Deployment/probserve",
        "Service/probserve",
        "HorizontalPodAutoscaler/probserve",
        "PodDisruptionBudget/probserve",
        "NetworkPolicy/probserve",
        "Deployment/probserve-drift-monitor",
        "Service/probserve-drift-monitor",
        "ServiceMonitor/probserve",
        "ServiceMonitor/probserve-drift-monitor",
        "PrometheusRule/probserve",
    ]:
        assert needed in kinds
    assert any(k.startswith("ConfigMap/probserve-dashboard-") for k in kinds)
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == "probserve"


def test_builtin_objects_validate_against_the_kubernetes_schemas(
    rendered: tuple[str, Objects],
) -> None:
    _, objects = rendered
    builtin = [o for o in objects if o["kind"] not in CRD_SCHEMAS]
    for o in builtin:
        # strict: a misspelt or misplaced field is an error (kubectl apply --validate=strict)
        kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused, as the API server's strict field validation
    does (a CRD schema alone only prunes them)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    if isinstance(schema, str) and schema.startswith("^(?i)"):
        # Go's RE2 takes an inline flag anywhere; Python's re only at the start. Same meaning.
        return "(?i)^" + schema.removeprefix("^(?i)")
    return schema


def validate_crd_object(o: dict[str, Any]) -> None:
    schema = strict(json.loads(CRD_SCHEMAS[o["kind"]].read_text()))
    assert o["apiVersion"] == "monitoring.coreos.com/v1"
    # metadata is the API server's ObjectMeta, not part of a CRD schema: check spec and the rest.
    body = {k: v for k, v in o.items() if k != "metadata"}
    jsonschema.validate(body, schema, cls=jsonschema.Draft7Validator)


def test_operator_objects_validate_against_their_crd_schemas(
    rendered: tuple[str, Objects],
) -> None:
    _, objects = rendered
    operator = [o for o in objects if o["kind"] in CRD_SCHEMAS]
    assert {o["kind"] for o in operator} == set(CRD_SCHEMAS)
    for o in operator:
        validate_crd_object(o)


def test_crd_validation_refuses_a_misspelt_field(cpu: Objects) -> None:
    monitor = json.loads(json.dumps(one(cpu, "ServiceMonitor", "probserve")))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd_object(monitor)


# -- generated from monitoring/ -------------------------------------------------------------------


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_generate", ROOT / "k8s" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_up_to_date() -> None:
    expected = generator().render(ROOT)
    for name, text in expected.items():
        path = ROOT / "k8s" / "base" / "generated" / name
        assert path.read_text() == text, f"{name} is stale: run python k8s/generate.py"


def test_prometheus_rule_carries_exactly_the_monitoring_rules(cpu: Objects) -> None:
    rule_files = sorted((ROOT / "monitoring" / "prometheus" / "rules").glob("*.yml"))
    assert rule_files, "monitoring/prometheus/rules/*.yml is missing"
    groups = [g for f in rule_files for g in yaml.safe_load(f.read_text())["groups"]]
    rendered = one(cpu, "PrometheusRule", "probserve")["spec"]["groups"]
    assert rendered == groups
    alerts = [r["alert"] for g in rendered for r in g["rules"] if "alert" in r]
    assert alerts and len(alerts) == len(set(alerts))


def test_dashboards_are_configmaps_for_the_grafana_sidecar(cpu: Objects) -> None:
    files = sorted((ROOT / "monitoring" / "grafana" / "dashboards").glob("*.json"))
    assert files, "monitoring/grafana/dashboards/*.json is missing"
    maps = [o for o in cpu if o["metadata"]["name"].startswith("probserve-dashboard-")]
    shipped = {name: text for m in maps for name, text in m["data"].items()}
    assert shipped == {f.name: f.read_text() for f in files}
    for m in maps:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_generator_output_follows_a_rule_change(tmp_path: Path) -> None:
    # The check above can fail: a changed rule file changes what the generator writes.
    rules = tmp_path / "monitoring" / "prometheus" / "rules"
    dashboards = tmp_path / "monitoring" / "grafana" / "dashboards"
    rules.mkdir(parents=True)
    dashboards.mkdir(parents=True)
    (dashboards / "a.json").write_text('{"title": "A"}\n')
    rule = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n"
    (rules / "r.yml").write_text(rule)
    module = generator()
    first = module.render(tmp_path)
    (rules / "r.yml").write_text(rule.replace("up == 0", "up == 1"))
    second = module.render(tmp_path)
    assert first["prometheusrule.yaml"] != second["prometheusrule.yaml"]
    loaded = yaml.safe_load(second["prometheusrule.yaml"])
    assert loaded["spec"]["groups"] == [{"name": "g", "rules": [{"alert": "A", "expr": "up == 1"}]}]
    assert module.main(["--root", str(tmp_path), "--check"]) == 1
    assert module.main(["--root", str(tmp_path)]) == 0
    assert module.main(["--root", str(tmp_path), "--check"]) == 0


# -- agreement with the service -------------------------------------------------------------------


def test_server_probes_ports_and_environment_agree_with_settings(
    rendered: tuple[str, Objects],
) -> None:
    from service.settings import Settings

    _, objects = rendered
    c = container(objects, "probserve")
    env = env_of(objects, c)
    probserve = {k for k in env if k.startswith("PROBSERVE_")}
    assert probserve <= service_env_names(), probserve - service_env_names()
    port = int(env.get("PROBSERVE_PORT", Settings.model_fields["port"].default))
    grpc_port = int(env.get("PROBSERVE_GRPC_PORT", Settings.model_fields["grpc_port"].default))
    http, grpc = c["ports"]
    assert (http["name"], http["containerPort"]) == ("http", port)
    assert (grpc["name"], grpc["containerPort"]) == ("grpc", grpc_port)
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert env["PROBSERVE_HOST"] == "0.0.0.0"
    assert env["PROBSERVE_MODEL_REPOSITORY"] == "/models"
    secrets = {k: v["secretKeyRef"]["name"] for k, v in env.items() if isinstance(v, dict)}
    assert secrets == {
        "PROBSERVE_ADMIN_TOKEN": "probserve-secrets",
        "PROBSERVE_PREDICTION_LOG_URL": "probserve-secrets",
    }
    # More than one worker needs prometheus-client's multiprocess directory, on a writable mount.
    if int(env.get("PROBSERVE_WORKERS", 1)) > 1:
        mounts = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        assert env["PROMETHEUS_MULTIPROC_DIR"] in mounts
    service = one(objects, "Service", "probserve")
    service_http, service_grpc = service["spec"]["ports"]
    assert service_http["targetPort"] == "http" and service_http["port"] == port
    assert service_grpc["targetPort"] == "grpc" and service_grpc["port"] == grpc_port
    assert service_grpc["appProtocol"] == "grpc"


def test_drift_monitor_environment_is_real_drift_settings(rendered: tuple[str, Objects]) -> None:
    _, objects = rendered
    c = container(objects, "probserve-drift-monitor")
    assert c["command"] == ["probserve"] and c["args"][:2] == ["drift", "serve"]
    env = {k for k in env_of(objects, c) if k.startswith("PROBSERVE_")}
    assert env <= drift_env_names(), env - drift_env_names()
    flags = command_flags(c["command"] + c["args"])
    assert flags is not None
    given, accepted = flags
    assert given <= accepted, f"unknown flags {given - accepted}"
    port = next(a for a in c["args"] if a.startswith("--port=")).removeprefix("--port=")
    (metrics,) = c["ports"]
    assert metrics["containerPort"] == int(port)


def test_pods_are_locked_down(rendered: tuple[str, Objects]) -> None:
    _, objects = rendered
    for deployment in [o for o in objects if o["kind"] == "Deployment"]:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert c["resources"]["requests"] and c["resources"]["limits"]
            for mount in c["volumeMounts"]:
                volume = volumes[mount["name"]]
                # Writable only where something must write: emptyDirs.
                assert mount.get("readOnly") or "emptyDir" in volume, mount
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for v in volumes.values()
            if "persistentVolumeClaim" in v
        }
        assert claims == {"probserve-models"}


def test_selectors_and_references_resolve(rendered: tuple[str, Objects]) -> None:
    _, objects = rendered
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}

    def pods_matching(selector: dict[str, str]) -> list[str]:
        return [
            name
            for name, d in deployments.items()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]

    for service in [o for o in objects if o["kind"] == "Service"]:
        (target,) = pods_matching(service["spec"]["selector"])
        ports = {
            p["name"]
            for c in deployments[target]["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    services = [o for o in objects if o["kind"] == "Service"]
    for monitor in [o for o in objects if o["kind"] == "ServiceMonitor"]:
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= names
    hpa = one(objects, "HorizontalPodAutoscaler", "probserve")
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    pdb = one(objects, "PodDisruptionBudget", "probserve")
    assert pods_matching(pdb["spec"]["selector"]["matchLabels"]) == ["probserve"]
    for policy in [o for o in objects if o["kind"] == "NetworkPolicy"]:
        (target,) = pods_matching(policy["spec"]["podSelector"]["matchLabels"])
        ports = {
            p["containerPort"]
            for c in deployments[target]["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert allowed == ports


def test_images_are_the_ones_compose_builds(cpu: Objects, gpu: Objects) -> None:
    services = load_compose()["services"]
    assert container(cpu, "probserve")["image"] == services["probserve"]["image"]
    assert container(gpu, "probserve")["image"] == services["probserve-gpu"]["image"]
    for objects in (cpu, gpu):
        assert (
            container(objects, "probserve-drift-monitor")["image"]
            == services["drift-monitor"]["image"]
        )


def test_gpu_overlay_asks_for_a_gpu_node_and_cuda(cpu: Objects, gpu: Objects) -> None:
    pod = one(gpu, "Deployment", "probserve")["spec"]["template"]["spec"]
    c = container(gpu, "probserve")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert env_of(gpu, c)["PROBSERVE_PROVIDERS"] == "cuda"
    # The CPU overlay stays off GPU nodes and on the CPU provider.
    cpu_c = container(cpu, "probserve")
    assert "nvidia.com/gpu" not in cpu_c["resources"]["limits"]
    assert env_of(cpu, cpu_c)["PROBSERVE_PROVIDERS"] == "cpu"
    # The drift monitor needs no GPU in either overlay.
    assert "nvidia.com/gpu" not in container(gpu, "probserve-drift-monitor")["resources"]["limits"]
