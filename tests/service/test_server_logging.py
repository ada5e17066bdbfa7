"""Logging set-up: JSON lines carry time, level, logger, message, extras and tracebacks."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from service.logging_setup import JsonLinesFormatter, configure_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_formatter() -> None:
    record = logging.LogRecord("probserve.http", logging.ERROR, __file__, 1, "bad %s", ("x",), None)
    record.request_id = "r-1"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    entry = json.loads(JsonLinesFormatter().format(record))
    assert entry["level"] == "error"
    assert entry["logger"] == "probserve.http"
    assert entry["message"] == "bad x"
    assert entry["request_id"] == "r-1"
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("+00:00")


@pytest.mark.parametrize(("fmt", "is_json"), [("json", True), ("plain", False)])
def test_configure_logging_routes_uvicorn_through_root(
    capsys: pytest.CaptureFixture[str], fmt: str, is_json: bool
) -> None:
    configure_logging("warning", fmt)  # type: ignore[arg-type]
    logging.getLogger("uvicorn.error").warning("shutting down")
    logging.getLogger("probserve").info("not shown at warning level")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    if is_json:
        assert json.loads(lines[0])["message"] == "shutting down"
    else:
        assert "WARNING" in lines[0] and "shutting down" in lines[0]
