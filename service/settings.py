"""The service's one settings class, read from ``PROBSERVE_*`` environment variables.

Every default lives here and nowhere else: ``probserve serve`` passes only the flags a user gave
(its flags default to ``None``), so an unset flag falls back to the environment, then to the
default below. Bad values fail at start-up with a message that names the setting and its
environment variable (:func:`describe_validation_error`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PROBSERVE_"

#: Short provider names a user may type, and the ONNX Runtime provider each one means.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

_VERSION_POLICY = re.compile(r"^(all|latest:[1-9][0-9]*)$")
_PROVIDER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*ExecutionProvider$")


class Settings(BaseSettings):
    """Configuration of one ``probserve serve`` process (each worker reads the same values)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="forbid",
        validate_default=True,
        frozen=True,
        # model_repository is a setting, not pydantic API: allow the model_ prefix.
        protected_namespaces=(),
    )

    model_repository: Path = Field(
        default=Path("./models"),
        description="Directory holding <model>/<version>/ bundles.",
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0: any free port).")
    workers: int = Field(default=1, ge=1, le=64, description="Server processes.")
    providers: str = Field(
        default="auto",
        description=(
            "ONNX Runtime execution providers: 'auto' (CUDA when onnxruntime-gpu sees a device, "
            "else CPU) or a comma list such as 'cuda,cpu' or 'CUDAExecutionProvider'."
        ),
    )
    intra_op_threads: int = Field(
        default=1,
        ge=1,
        le=1024,
        description=(
            "ONNX Runtime intra-op threads per model (small MLPs run best on one; the batcher, "
            "not a thread pool, gives throughput)."
        ),
    )
    # Requests that arrive while a batch runs join the next one whatever the delay, so under
    # load batches form by themselves; a longer delay only adds latency to a lone request
    # (measured with `probserve bench`: 1 us beat 100 and 500 us at 1 and at 32 connections).
    max_queue_delay_us: int = Field(
        default=1,
        ge=0,
        le=1_000_000,
        description=(
            "How long the first request of a batch may wait for others (0: no batching; "
            "1: batch only what arrives together or while the previous batch runs)."
        ),
    )
    max_batch_size: int = Field(default=256, ge=1, le=65536, description="Rows per ONNX call.")
    max_rows_per_request: int = Field(
        default=4096, ge=1, le=1_000_000, description="Rows one request may carry."
    )
    confidence_level: float = Field(
        default=0.95,
        ge=0.5,
        le=0.999,
        description="Interval and prediction-set level when a request gives none.",
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest request body accepted (bigger: 413).",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for model control; unset turns model control off (403).",
    )
    version_policy: str = Field(
        default="latest:1",
        description="Which versions of each model to serve: 'latest:N' or 'all'.",
    )
    # On by default: retraining while `make run` serves should just work. A scan lists a few
    # directories; loading happens only when a new version appears.
    poll_interval_s: float = Field(
        default=10.0,
        ge=0.0,
        le=86400.0,
        description="Seconds between repository scans for new versions (0: no hot reload).",
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["plain", "json"] = Field(
        default="plain", description="'plain' text or 'json' (one JSON object per line)."
    )
    access_log: bool = Field(default=False, description="Log every request (costs throughput).")

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        # Users write INFO as often as info; accept both, store one spelling.
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("providers")
    @classmethod
    def _check_providers(cls, value: str) -> str:
        text = value.strip()
        if text.lower() == "auto":
            return "auto"
        names = [part.strip() for part in text.split(",")]
        if not names or any(not n for n in names):
            raise ValueError("expected 'auto' or a comma list of providers such as 'cuda,cpu'")
        for name in names:
            if name.lower() not in PROVIDER_ALIASES and not _PROVIDER_NAME.match(name):
                raise ValueError(
                    f"unknown execution provider {name!r}: expected 'auto', "
                    f"{', '.join(PROVIDER_ALIASES)} or an ONNX Runtime name like "
                    "'CUDAExecutionProvider'"
                )
        return ",".join(names)

    @field_validator("version_policy")
    @classmethod
    def _check_version_policy(cls, value: str) -> str:
        text = value.strip().lower()
        if not _VERSION_POLICY.match(text):
            raise ValueError("expected 'all' or 'latest:N' with N a positive integer")
        return text

    @property
    def provider_list(self) -> list[str] | None:
        """ONNX Runtime provider names in priority order, or ``None`` for 'auto'."""
        if self.providers == "auto":
            return None
        return [PROVIDER_ALIASES.get(n.lower(), n) for n in self.providers.split(",")]

    @property
    def latest_versions(self) -> int | None:
        """N of 'latest:N', or ``None`` when every version is served."""
        if self.version_policy == "all":
            return None
        return int(self.version_policy.split(":", 1)[1])

    def admin_token_value(self) -> str | None:
        """The admin token in clear, for the one comparison that needs it."""
        return None if self.admin_token is None else self.admin_token.get_secret_value()


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad setting, its environment variable and what was expected."""
    parts = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        env = f"{ENV_PREFIX}{field.upper()}"
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{field} ({env}, got {err.get('input')!r}): {message}")
    return "invalid settings: " + "; ".join(parts)
