"""A serving process that logs predictions and feedback never loads pandas (43 MiB unused)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from service.predlog.reader import read_window
from tests.service.conftest import TEST_CLASSES, start_live_server
from tests.service.support import ROW, samples, value


def _mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def written(metrics: str) -> float:
    """Rows the prediction log stored, by its own counter."""
    return value(samples(metrics), "probserve_prediction_log_rows_total", outcome="written")


def test_logging_predictions_and_feedback_loads_no_pandas(
    bundle_repository: Path, tmp_path: Path
) -> None:
    server = start_live_server(bundle_repository, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for rows in (1, 5):  # a 1-row and a many-row record; the toy model has a text feature
                answer = client.post(
                    "/v1/models/toy/predict",
                    json={"instances": [ROW] * rows},
                    headers={"x-request-id": f"r{rows}"},
                )
                assert answer.status_code == 200, answer.text
            labels = [{"request_id": "r5", "instance": 0, "label": TEST_CLASSES[0]}]
            answer = client.post("/v1/models/toy/feedback", json={"labels": labels})
            assert answer.status_code == 200, answer.text
            deadline = time.monotonic() + 15
            # Every row reached the store (6 predicted instances and 1 label): the writer ran.
            while written(client.get("/metrics").text) < 7:
                assert time.monotonic() < deadline, "the log wrote nothing within 15 s"
                time.sleep(0.05)
        maps = _mapped_libraries(server.process.pid)
        assert "onnxruntime" in maps  # the check reads the right process
        pandas = [line.split()[-1] for line in maps.splitlines() if "/pandas/" in line]
        assert not pandas, f"the serving process loaded pandas: {pandas[0]}"
    finally:
        assert server.stop() == 0
    assert len(read_window(str(tmp_path / "predictions"), "toy")) == 6
