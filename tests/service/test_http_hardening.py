"""Hostile ids, internals in public answers, readiness with a broken model, the token warning."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from service.http.public import public_reason
from service.readiness import is_ready
from service.request_ids import MAX_LENGTH, usable_request_id
from service.types import IndexEntry, ModelState
from tests.service.conftest import (
    ADMIN_TOKEN,
    InProcessService,
    ServiceFactory,
    start_live_server,
    write_test_bundle,
)

ROW = {"x1": 0.3, "x2": 4.0, "colour": "red"}
PREDICT_BODY = {"instances": [ROW]}
HOSTILE_IDS = {
    "crlf": "abc\r\nSet-Cookie: x=1",
    "control": "abc\x01def",
    "del": "abc\x7f",
    "non-ascii": "caf\u00e9",
    "long": "a" * 70_000,
    "one-over": "a" * (MAX_LENGTH + 1),
}


def _infer_body(request_id: str) -> dict[str, object]:
    return {
        "id": request_id,
        "inputs": [
            {"name": "x1", "shape": [1], "datatype": "FP64", "data": [0.3]},
            {"name": "x2", "shape": [1], "datatype": "FP64", "data": [4.0]},
            {"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]},
        ],
    }


def _header_safe(value: str) -> bool:
    return 0 < len(value) <= MAX_LENGTH and value.isascii() and value.isprintable()


# -- request ids ----------------------------------------------------------------------------------


def test_the_id_rule() -> None:
    assert usable_request_id("req-1 from client") == "req-1 from client"
    assert usable_request_id("a" * MAX_LENGTH) == "a" * MAX_LENGTH
    assert usable_request_id(None) is None
    assert usable_request_id("") is None
    for value in HOSTILE_IDS.values():
        assert usable_request_id(value) is None


@pytest.mark.parametrize("kind", sorted(HOSTILE_IDS))
def test_a_hostile_v2_body_id_is_echoed_in_the_body_but_never_in_a_header(
    bundle_repository: Path, service_factory: ServiceFactory, kind: str
) -> None:
    service = service_factory(bundle_repository, max_request_bytes=1024 * 1024)  # the 70 k id
    hostile = HOSTILE_IDS[kind]
    response = service.post("/v2/models/toy/infer", json=_infer_body(hostile))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == hostile  # V2 clients match answers by it
    header = response.headers["x-request-id"]
    assert header != hostile and _header_safe(header)


def test_a_good_v2_body_id_goes_into_the_header(service: InProcessService) -> None:
    response = service.post("/v2/models/toy/infer", json=_infer_body("client-42"))
    assert response.headers["x-request-id"] == "client-42"
    assert response.json()["id"] == "client-42"


@pytest.mark.parametrize("kind", ["control", "del", "long", "one-over"])
def test_a_hostile_x_request_id_header_is_replaced(service: InProcessService, kind: str) -> None:
    hostile = HOSTILE_IDS[kind]
    for path, body in (
        ("/v1/models/toy/predict", PREDICT_BODY),
        ("/v2/models/toy/infer", {"inputs": _infer_body("")["inputs"]}),
        ("/v1/models/nope/predict", PREDICT_BODY),  # an error answer takes the same rule
        ("/v2/models/nope/infer", {"inputs": []}),
    ):
        response = service.post(path, json=body, headers={"x-request-id": hostile})
        header = response.headers["x-request-id"]
        assert header != hostile and _header_safe(header), (path, response.status_code)


# -- no internals in public answers ---------------------------------------------------------------


def test_public_reason_drops_paths_digests_and_parser_detail() -> None:
    digest = "ab" * 32
    assert public_reason(
        f"bundle /srv/models/m/3 failed the sha256 check: model.onnx has sha256 {digest} but"
    ) == ("bundle 3 failed the sha256 check: model.onnx has sha256 <sha256> but")
    assert public_reason("cannot read '/srv/m/1/manifest.json': gone\n  input_value=b'{'") == (
        "cannot read 'manifest.json': gone"
    )
    assert public_reason("not selected by version policy latest:1") == (
        "not selected by version policy latest:1"
    )


def _broken_repository(root: Path) -> Path:
    """A repository with one good model and four bundles that fail in different ways."""
    repository = root / "models"
    write_test_bundle(repository, "good")
    bundle = write_test_bundle(repository, "badsha")
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes() + b"x")
    (write_test_bundle(repository, "nomanifest") / "manifest.json").unlink()
    (write_test_bundle(repository, "badjson") / "manifest.json").write_text("{")
    bundle = write_test_bundle(repository, "garbage")
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "model.onnx").write_bytes(b"garbage")
    manifest["model_sha256"] = hashlib.sha256(b"garbage").hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return repository


BROKEN = ("badsha", "nomanifest", "badjson", "garbage")


def test_no_public_answer_shows_a_path_or_a_digest(
    tmp_path: Path, service_factory: ServiceFactory
) -> None:
    repository = _broken_repository(tmp_path)
    service = service_factory(repository, admin_token=None)
    paths = ["/readyz", "/v2/health/ready", "/v1/models", "/v2", "/openapi.json"]
    for name in ("good", *BROKEN):
        paths += [
            f"/v1/models/{name}",
            f"/v2/models/{name}",
            f"/v2/models/{name}/versions/1",
            f"/v2/models/{name}/ready",
            f"/v2/models/{name}/versions/1/ready",
        ]
    answers = [service.get(path) for path in paths]
    for name in ("good", *BROKEN):
        answers.append(service.post(f"/v1/models/{name}/predict", json=PREDICT_BODY))
        answers.append(service.post(f"/v2/models/{name}/infer", json=_infer_body("i")))
        answers.append(service.post(f"/v2/repository/models/{name}/load"))  # 403: no token
    seen_reasons = ""
    for response in answers:
        text = response.text
        assert str(tmp_path) not in text, (response.request.url, text)
        assert not re.search(r"[0-9a-f]{64}", text), (response.request.url, text)
        assert "\n" not in text, (response.request.url, text)  # no parser dumps either
        seen_reasons += text
    # The reasons still say what is wrong.
    assert "sha256 check" in seen_reasons and "manifest check" in seen_reasons
    assert service.get("/readyz").status_code == 503


def test_the_repository_index_behind_the_token_still_names_the_failure(
    tmp_path: Path, service_factory: ServiceFactory
) -> None:
    repository = _broken_repository(tmp_path)
    service = service_factory(repository)
    rows = service.post(
        "/v2/repository/index", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    assert {row["name"] for row in rows if row["state"] == "UNAVAILABLE"} == set(BROKEN)
    # A load error names the model and the failed check, not where the bundle lies.
    for name in BROKEN:
        response = service.post(
            f"/v2/repository/models/{name}/load",
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert response.status_code in (400, 503), response.text
        assert name in response.text and "check" in response.text
        assert str(tmp_path) not in response.text
        assert not re.search(r"[0-9a-f]{64}", response.text)


# -- readiness with a broken model ----------------------------------------------------------------


def _row(name: str, state: ModelState, reason: str = "", version: int | None = 1) -> IndexEntry:
    return IndexEntry(name, version, state, reason)


READY, DOWN = ModelState.READY, ModelState.UNAVAILABLE


@pytest.mark.parametrize(
    ("rows", "strict", "lenient"),
    [
        ([], False, False),  # nothing to serve
        ([_row("a", READY)], True, True),
        ([_row("a", READY), _row("b", DOWN, "failed")], False, True),
        ([_row("a", DOWN, "failed")], False, False),
        # An older version not selected does not make a serving model unready.
        ([_row("a", READY, version=2), _row("a", DOWN, "not selected", version=1)], True, True),
        # Unloaded on purpose, or no version yet: not counted either way.
        ([_row("a", READY), _row("b", DOWN, "unloaded")], True, True),
        ([_row("a", READY), _row("b", DOWN, "no versions on disk", version=None)], True, True),
        ([_row("b", DOWN, "unloaded")], False, False),
    ],
)
def test_readiness_rule(rows: list[IndexEntry], strict: bool, lenient: bool) -> None:
    assert is_ready(rows, "all") is strict
    assert is_ready(rows, "any") is lenient


@pytest.mark.parametrize(("mode", "status"), [("all", 503), ("any", 200)])
def test_readiness_with_one_good_and_one_broken_model(
    tmp_path: Path, service_factory: ServiceFactory, mode: str, status: int
) -> None:
    repository = tmp_path / "models"
    write_test_bundle(repository, "good")
    bundle = write_test_bundle(repository, "broken")
    (bundle / "model.onnx").write_bytes(b"not onnx")
    service = service_factory(repository, readiness=mode)
    assert service.get("/readyz").status_code == status
    assert service.get("/v2/health/ready").status_code == status
    assert service.get("/v2/health/ready").json() == {"ready": status == 200}
    # Either way the good model answers and the broken one says why it does not.
    assert service.post("/v1/models/good/predict", json=PREDICT_BODY).status_code == 200
    assert service.post("/v1/models/broken/predict", json=PREDICT_BODY).status_code == 503


# -- the admin token on the command line ----------------------------------------------------------


@pytest.mark.slow
def test_admin_token_flag_warns_that_ps_shows_it(bundle_repository: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = start_live_server(
        bundle_repository, log, "--admin-token", "s3cret", PROBSERVE_PREDICTION_LOG_URL="none"
    )
    assert server.stop() == 0
    text = log.read_text()
    assert "--admin-token is visible to every local user" in text
    assert "PROBSERVE_ADMIN_TOKEN" in text
    assert "s3cret" not in text
