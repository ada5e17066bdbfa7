"""Load shedding through HTTP: a full queue answers 503 with Retry-After at once, counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from service.settings import Settings
from tests.service.conftest import ServiceFactory
from tests.service.support import ROW, samples, value


def test_a_full_queue_sheds_with_retry_after(
    bundle_repository: Path, service_factory: ServiceFactory
) -> None:
    # The first request waits a whole second for company in the queue (2 of 3 rows); the second
    # would make 4 queued rows: it is refused at once, while the first is still answered.
    service = service_factory(
        bundle_repository,
        max_queue_delay_us=1_000_000,
        max_queued_rows=3,
        max_rows_per_request=2,
    )
    body = {"instances": [ROW, ROW]}

    async def both() -> tuple[httpx.Response, httpx.Response]:
        assert service.client is not None
        first = asyncio.create_task(service.client.post("/v1/models/toy/predict", json=body))
        await asyncio.sleep(0.2)  # the first is queued, waiting for its batch's deadline
        second = await service.client.post("/v2/models/toy/infer", json=_v2(2))
        return await first, second

    first, second = service.run(both())
    assert first.status_code == 200
    assert second.status_code == 503
    assert second.headers["retry-after"] == "1"
    assert "queue" in second.json()["error"]
    found = samples(service.get("/metrics").text)
    assert value(found, "probserve_errors_total", model="toy", type="overloaded") == 1


def _v2(rows: int) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "x1", "datatype": "FP32", "shape": [rows], "data": [0.1] * rows},
            {"name": "x2", "datatype": "FP32", "shape": [rows], "data": [1.0] * rows},
            {"name": "colour", "datatype": "BYTES", "shape": [rows], "data": ["red"] * rows},
        ]
    }


def test_a_queue_smaller_than_a_request_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="max_queued_rows"):
        Settings(max_queued_rows=10, max_rows_per_request=20)
