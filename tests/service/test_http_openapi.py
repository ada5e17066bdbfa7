"""The OpenAPI document tells the truth, and the docs pages work without the internet.

schemathesis generates requests for every operation from /openapi.json (a fixed seed, a bounded
number of examples, plus the document's own examples, which hit a real model) and checks each
answer against the document: no 5xx, every status documented, every body and content type as
documented.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.conftest import (
    InProcessService,
    LiveServer,
    start_live_server,
    write_test_bundle,
)

#: Generated requests per operation: enough to reach every documented status, small for CI.
EXAMPLES_PER_OPERATION = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _schema(service: InProcessService) -> dict[str, Any]:
    response = service.get("/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


# -- /docs and /redoc offline ---------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_their_assets_from_this_server(
    service: InProcessService, page: str
) -> None:
    html = service.get(page).text
    assert "http://" not in html and "https://" not in html  # no CDN, no font host
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    scripts = [a for a in assets if a.endswith(".js")]
    assert scripts, html
    for asset in assets:
        assert asset.startswith("/"), asset
        response = service.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 1000, asset
    for script in scripts:
        assert "javascript" in service.get(script).headers["content-type"]


# -- the document against the service -------------------------------------------------------------


def test_no_422_and_the_real_error_statuses(service: InProcessService) -> None:
    schema = _schema(service)
    statuses: dict[str, set[str]] = {}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses[f"{method.upper()} {path}"] = set(operation["responses"])
    assert not any("422" in documented for documented in statuses.values())
    assert {"400", "404", "413", "503"} <= statuses["POST /v1/models/{name}/predict"]
    assert {"400", "404", "413", "503"} <= statuses["POST /v2/models/{name}/infer"]
    assert {"404", "503"} <= statuses["GET /v2/models/{name}/versions/{version}"]
    assert {"401", "403"} <= statuses["POST /v2/repository/index"]
    assert {"400", "401", "403", "404"} <= statuses["POST /v2/repository/models/{name}/load"]
    assert "503" in statuses["GET /readyz"] and "503" in statuses["GET /v2/health/ready"]
    assert "HTTPValidationError" not in schema.get("components", {}).get("schemas", {})


def test_v2_schemas_know_bool(service: InProcessService) -> None:
    infer = _schema(service)["paths"]["/v2/models/{name}/infer"]["post"]
    answer = infer["responses"]["200"]["content"]["application/json"]["schema"]
    datatypes = answer["properties"]["outputs"]["items"]["properties"]["datatype"]["enum"]
    assert "BOOL" in datatypes  # prediction_set is a BOOL mask
    # ... and it really is sent
    body = {
        "inputs": [
            {"name": "x1", "shape": [1], "datatype": "FP64", "data": [0.3]},
            {"name": "x2", "shape": [1], "datatype": "FP64", "data": [4.0]},
            {"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]},
        ]
    }
    outputs = service.post("/v2/models/toy/infer", json=body).json()["outputs"]
    assert {o["name"]: o["datatype"] for o in outputs}["prediction_set"] == "BOOL"


@pytest.mark.parametrize(
    ("path", "body", "pointer"),
    [
        ("/v1/models/toy/predict", {"instances": [{}]}, ("instances", "items", "minProperties")),
        ("/v2/models/toy/infer", {"inputs": []}, ("inputs", "minItems")),
    ],
)
def test_request_schemas_refuse_what_the_server_refuses(
    service: InProcessService, path: str, body: dict[str, Any], pointer: tuple[str, ...]
) -> None:
    assert service.post(path, json=body).status_code == 400
    template = "/v1/models/{name}/predict" if "v1" in path else "/v2/models/{name}/infer"
    operation = _schema(service)["paths"][template]["post"]
    node: Any = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]
    for key in pointer[:-1]:
        node = node[key]
        node = node.get("properties", node)
    assert node[pointer[-1]] == 1


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/models/toy/predict", "POST"),  # a hot path: the lean front hands it on
        ("POST", "/healthz", "GET"),
        ("DELETE", "/v2/repository/index", "POST"),
    ],
)
def test_405_names_the_allowed_methods(
    service: InProcessService, method: str, path: str, allowed: str
) -> None:
    response = service.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert "not allowed" in response.json()["error"]


# -- schemathesis against a real server -----------------------------------------------------------


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("openapi")
    write_test_bundle(root / "models")
    # No prediction log: feedback then answers its documented 503.
    server = start_live_server(
        root / "models", root / "server.log", PROBSERVE_PREDICTION_LOG_URL="none"
    )
    yield server
    server.stop()


def _check_operation(operation: Any, base_url: str) -> None:
    strategy = st.one_of(operation.as_strategy(), *operation.get_strategies_from_examples())

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,  # the fixed seed: the same requests on every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=10)

    run()


@pytest.mark.slow
def test_schemathesis_finds_no_disagreement(docs_server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(docs_server.url + "/openapi.json")
    failures: list[str] = []
    checked = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the document itself is valid
        operation = result.ok()
        checked.append(operation.label)
        try:
            _check_operation(operation, docs_server.url)
        except BaseException as exc:  # a FailureGroup is a BaseExceptionGroup
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {exc}")
    assert len(checked) >= 22, checked  # every route of the service was generated for
    assert not failures, "\n\n".join(failures)
    assert httpx.get(docs_server.url + "/healthz").status_code == 200
