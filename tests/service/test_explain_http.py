"""The explain endpoint over HTTP: attributions that add up, limits, isolation from predictions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.service.conftest import InProcessService, ServiceFactory, write_test_bundle
from tests.service.support import samples, value

ROWS = [
    {"x1": 1.5, "x2": 3, "colour": "red"},
    {"x1": None, "x2": 7.5, "colour": "blue"},
    {"x1": -2.0, "x2": None, "colour": "purple"},  # an unseen category
]
CLASSES = ["no", "yes", "maybe"]


@pytest.fixture
def service(bundle_repository: Path, service_factory: ServiceFactory) -> InProcessService:
    return service_factory(bundle_repository, metrics=True)


def test_attributions_add_up_to_the_served_prediction(service: InProcessService) -> None:
    body = {"instances": ROWS, "confidence_level": 0.9}
    explained = service.post("/v1/models/toy/explain", json=body)
    assert explained.status_code == 200, explained.text
    answer = explained.json()
    predicted = service.post("/v1/models/toy/predict", json=body).json()["predictions"]
    assert (answer["model"], answer["version"], answer["confidence_level"]) == ("toy", 1, 0.9)
    assert answer["method"] == "exact"  # 3 features: every coalition
    assert len(answer["explanations"]) == 3
    for row, served in zip(answer["explanations"], predicted, strict=True):
        assert row["label"] == served["label"]
        for c in CLASSES:
            total = row["base_values"][c] + sum(row["attributions"][f][c]["value"] for f in ROWS[0])
            # base value + attributions = the probability /predict serves for the row
            assert total == pytest.approx(served["probabilities"][c], abs=1e-5)
            assert abs(row["additivity_error"][c]) < 1e-6
            for f in ROWS[0]:
                a = row["attributions"][f][c]
                assert a["lower"] <= a["value"] <= a["upper"]
        # Probabilities sum to one, so each feature's attributions over the classes sum to 0.
        for f in ROWS[0]:
            assert sum(row["attributions"][f][c]["value"] for c in CLASSES) == pytest.approx(
                0.0, abs=1e-6
            )


def test_every_explain_path_gives_the_same_answer(service: InProcessService) -> None:
    body = {"instances": ROWS[:1]}
    answers = [
        service.post(path, json=body).json()["explanations"]
        for path in (
            "/v1/models/toy/explain",
            "/v1/models/toy:explain",  # KServe's V1 verb path
            "/v1/models/toy/versions/1/explain",
        )
    ]
    assert answers[0] == answers[1] == answers[2]


def test_wider_levels_give_wider_attribution_intervals(service: InProcessService) -> None:
    def widths(level: float) -> np.ndarray:
        row = service.post(
            "/v1/models/toy/explain", json={"instances": ROWS[:1], "confidence_level": level}
        ).json()["explanations"][0]
        return np.array(
            [[a[c]["upper"] - a[c]["lower"] for c in CLASSES] for a in row["attributions"].values()]
        )

    narrow, wide = widths(0.5), widths(0.99)
    assert np.all(wide >= narrow) and np.any(wide > narrow)


def test_row_limit_and_bad_input_are_400s_naming_what_is_wrong(service: InProcessService) -> None:
    at_limit = service.post("/v1/models/toy/explain", json={"instances": [ROWS[0]] * 16})
    assert at_limit.status_code == 200
    over = service.post("/v1/models/toy/explain", json={"instances": [ROWS[0]] * 17})
    assert over.status_code == 400
    assert over.json()["limit"] == 16 and "17 rows" in over.json()["error"]
    bad = service.post("/v1/models/toy/explain", json={"instances": [{**ROWS[0], "x1": "a"}]})
    assert bad.status_code == 400 and bad.json()["feature"] == "x1"
    assert service.post("/v1/models/nope/explain", json={"instances": ROWS}).status_code == 404
    assert (
        service.post("/v1/models/toy/versions/9/explain", json={"instances": ROWS}).status_code
        == 404
    )


def test_explain_durations_are_a_metric(service: InProcessService) -> None:
    for _ in range(2):
        assert service.post("/v1/models/toy/explain", json={"instances": ROWS}).status_code == 200
    found = samples(service.get("/metrics").text)
    count = value(found, "probserve_explain_duration_seconds_count", model="toy", version="1")
    assert count == 2


def test_an_explain_flood_is_shed_and_predictions_still_answer(
    tmp_path: Path, service_factory: ServiceFactory
) -> None:
    # A background of 4,000 reference rows makes each 16-row job real work: 16 x 8 coalitions
    # x 4,000 rows through the model per job, so jobs are still running while predictions go.
    repository = tmp_path / "models"
    write_test_bundle(repository, "toy", reference_rows=4000)
    service = service_factory(repository, explain_queue_size=1, explain_background_rows=4000)
    service.post("/v1/models/toy/explain", json={"instances": ROWS[:1]})  # the explainer exists
    client = service.client
    assert client is not None

    async def flood() -> tuple[list[httpx.Response], list[httpx.Response]]:
        body: dict[str, Any] = {"instances": [ROWS[0]] * 16}
        explains = [
            asyncio.ensure_future(client.post("/v1/models/toy/explain", json=body))
            for _ in range(10)
        ]
        predicts = [
            await client.post("/v1/models/toy/predict", json={"instances": ROWS}) for _ in range(20)
        ]
        still_explaining = sum(not e.done() for e in explains)
        assert still_explaining, "the flood ended before the predictions: nothing was measured"
        return list(await asyncio.gather(*explains)), predicts

    explains, predicts = service.run(flood(), timeout=120)
    assert [p.status_code for p in predicts] == [200] * 20
    statuses = [e.status_code for e in explains]
    assert set(statuses) == {200, 503}, statuses
    shed = next(e for e in explains if e.status_code == 503)
    assert shed.json()["type"] == "explainer_busy" and shed.headers["retry-after"] == "1"


def test_an_explanation_past_its_deadline_is_a_503(
    bundle_repository: Path, service_factory: ServiceFactory
) -> None:
    service = service_factory(bundle_repository, explain_deadline_s=0.000001)
    answer = service.post("/v1/models/toy/explain", json={"instances": ROWS})
    assert answer.status_code == 503
    assert answer.json()["type"] == "explanation_deadline_exceeded"
    # Predictions are untouched by the explainer's deadline.
    assert service.post("/v1/models/toy/predict", json={"instances": ROWS}).status_code == 200


@pytest.mark.parametrize(
    "context",
    [{"group": "x" * 10_000}, {"group": {"nested": [1, 2]}}, "not an object", {"group": 1.5}],
)
def test_hostile_context_in_an_explain_request_is_a_400(
    service: InProcessService, context: object
) -> None:
    # The toy model declares no context attribute: whatever shape it takes, it is refused by
    # name, before any explanation work is queued.
    answer = service.post(
        "/v1/models/toy/explain", json={"instances": [{**ROWS[0], "context": context}]}
    )
    assert answer.status_code == 400
    assert "context" in answer.json()["error"]
