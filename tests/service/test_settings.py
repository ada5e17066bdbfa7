"""Settings: defaults, PROBSERVE_* environment, flags over environment, clear errors (exit 2)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service import serve as serve_module
from service.cli import main
from service.runtime import cuda_device_usable
from service.settings import Settings, describe_validation_error


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No PROBSERVE_* from the developer's shell; logging restored after `serve` configured it."""
    for key in list(os.environ):
        if key.startswith("PROBSERVE_"):
            monkeypatch.delenv(key)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_documented_defaults() -> None:
    s = Settings()
    assert s.model_repository == Path("models")
    assert (s.host, s.port, s.workers, s.providers) == ("127.0.0.1", 8000, 1, "auto")
    assert s.confidence_level == 0.95
    assert s.max_request_bytes == 8 * 1024 * 1024
    assert s.max_header_bytes == 64 * 1024  # nginx refuses past 4 x 8 KiB, Triton tens of KiB
    assert s.admin_token is None and s.admin_token_value() is None
    assert s.version_policy == "latest:1" and s.latest_versions == 1
    assert s.poll_interval_s == 10
    assert (s.log_level, s.log_format, s.access_log) == ("info", "plain", False)
    assert s.provider_list is None


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_admin_token_turns_model_control_off(
    monkeypatch: pytest.MonkeyPatch, empty: str
) -> None:
    # compose passes `${PROBSERVE_ADMIN_TOKEN:-}`: kept as "", "Authorization: Bearer " matched it.
    monkeypatch.setenv("PROBSERVE_ADMIN_TOKEN", empty)
    s = Settings()
    assert s.admin_token is None and s.admin_token_value() is None


def test_environment_and_explicit_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBSERVE_PORT", "9001")
    monkeypatch.setenv("PROBSERVE_PROVIDERS", "cuda, cpu")
    monkeypatch.setenv("PROBSERVE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("PROBSERVE_VERSION_POLICY", "ALL")
    monkeypatch.setenv("PROBSERVE_ADMIN_TOKEN", "t0ken")
    s = Settings()
    assert s.port == 9001
    assert s.provider_list == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert s.log_level == "debug"
    assert s.latest_versions is None
    assert s.admin_token_value() == "t0ken"
    assert "t0ken" not in repr(s)
    assert Settings(port=9002).port == 9002  # an explicit value (a CLI flag) beats the env


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("port", "70000", "less than or equal to 65535"),
        ("workers", "0", "greater than or equal to 1"),
        ("confidence_level", "1.5", "0.999"),
        ("providers", "gpu", "unknown execution provider 'gpu'"),
        # The runtime refuses TensorRT (not in the onnxruntime packages we install): so must
        # the settings check, rather than pass it and fail at start-up.
        ("providers", "tensorrt", "unknown execution provider 'tensorrt'"),
        ("prediction_log_url", "mysql://x", "postgresql://user:password@host"),
        ("prediction_log_url", "sqlite:///p.sqlite", "SQLite prediction log is retired"),
        ("prediction_log_sample_rate", "1.5", "less than or equal to 1"),
        ("version_policy", "newest", "latest:N"),
        ("log_format", "xml", "plain"),
        ("max_queue_delay_us", "-1", "greater than or equal to 0"),
    ],
)
def test_bad_values_are_named_with_their_variable(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(f"PROBSERVE_{field.upper()}", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    message = describe_validation_error(info.value)
    assert f"PROBSERVE_{field.upper()}" in message
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("value", "stored", "latest"),
    [("latest", "latest:1", 1), ("LATEST:3", "latest:3", 3), ("all", "all", None)],
)
def test_version_policy_accepts_what_the_readme_lists(
    monkeypatch: pytest.MonkeyPatch, value: str, stored: str, latest: int | None
) -> None:
    monkeypatch.setenv("PROBSERVE_VERSION_POLICY", value)
    settings = Settings()
    assert (settings.version_policy, settings.latest_versions) == (stored, latest)


def test_a_database_url_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBSERVE_PREDICTION_LOG_URL", "mysql://admin:hunter2@db/x")
    with pytest.raises(ValidationError) as info:
        Settings()
    message = describe_validation_error(info.value)
    assert "PROBSERVE_PREDICTION_LOG_URL" in message
    assert "hunter2" not in message


def test_serve_flags_override_env_and_unset_flags_keep_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[tuple[Settings, dict[str, Any]]] = []
    monkeypatch.setattr(serve_module, "run_server", lambda s, given: seen.append((s, given)))
    monkeypatch.setenv("PROBSERVE_PORT", "9100")
    monkeypatch.setenv("PROBSERVE_MAX_BATCH_SIZE", "32")
    argv = ["serve", "--model-repository", str(tmp_path), "--port", "9200", "--access-log"]
    assert main(argv) == 0
    settings, given = seen[0]
    assert settings.port == 9200
    assert settings.max_batch_size == 32
    assert settings.model_repository == tmp_path
    assert settings.access_log is True
    assert set(given) == {"model_repository", "port", "access_log"}


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["serve", "--port", "70000"], {}, "PROBSERVE_PORT"),
        (["serve", "--confidence-level", "0.1"], {}, "PROBSERVE_CONFIDENCE_LEVEL"),
        (["serve"], {"PROBSERVE_WORKERS": "many"}, "PROBSERVE_WORKERS"),
    ],
)
def test_bad_settings_exit_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    fragment: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: invalid settings")
    assert fragment in err
    assert len(err.splitlines()) == 1


@pytest.mark.skipif(cuda_device_usable(), reason="a CUDA device is present: cuda would start")
def test_explicit_cuda_without_a_gpu_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["serve", "--providers", "cuda", "--model-repository", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "CUDA" in err or "cuda" in err


def test_every_setting_has_a_serve_flag_and_every_flag_a_setting() -> None:
    import inspect

    from service.serve import serve

    flags = set(inspect.signature(serve).parameters)
    assert flags == set(Settings.model_fields)
