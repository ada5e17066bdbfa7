"""The service's one settings class, read from ``PROBSERVE_*`` environment variables.

Every default lives here and nowhere else: ``probserve serve`` passes only the flags a user gave
(its flags default to ``None``), so an unset flag falls back to the environment, then to the
default below. Bad values fail at start-up with a message that names the setting and its
environment variable (:func:`describe_validation_error`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.batching.config import BatchingConfig
from service.explain.defaults import (
    DEFAULT_BACKGROUND_ROWS,
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_ROWS,
    DEFAULT_QUEUE_SIZE,
)
from service.explain.explainer import ExplainerSettings
from service.predlog.urls import DEFAULT_LOG_URL
from service.provider_names import parse_provider_names
from service.uncertainty.levels import MAX_CONFIDENCE_LEVEL, MIN_CONFIDENCE_LEVEL
from service.version_policy import VersionPolicy

ENV_PREFIX = "PROBSERVE_"


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
    # 8001 as Triton and KServe: their gRPC clients and manifests assume it.
    grpc_port: int = Field(
        default=8001,
        ge=0,
        le=65535,
        description="TCP port of the gRPC Open Inference Protocol (0: no gRPC server).",
    )
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
    # The idle fast path (docs/architecture.md, "Request path"): a lone small request skips the
    # hop to the worker thread and back, about a third of a lone request's time on the demo model.
    # The bound keeps a slow model off the event loop; measured per model version as it serves.
    inline_max_us: int = Field(
        default=500,
        ge=0,
        le=100_000,
        description=(
            "A small request that finds its model idle runs on the event loop when the model's "
            "last small batch took at most this many microseconds (0: always the worker thread)."
        ),
    )
    # Load shedding (Triton's max_queue_size and default_timeout_microseconds): past the bound a
    # request is refused at once with 503 + Retry-After rather than queued for nobody.
    max_queued_rows: int = Field(
        default=65_536,
        ge=1,
        le=100_000_000,
        description=(
            "Rows that may wait in one model version's batch queue; past it requests get 503 "
            "with Retry-After at once (keep it above max_rows_per_request)."
        ),
    )
    max_queue_wait_s: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description=(
            "A request still queued after this many seconds is answered 503 and not computed "
            "(0: wait as long as it takes)."
        ),
    )
    max_rows_per_request: int = Field(
        default=4096, ge=1, le=1_000_000, description="Rows one request may carry."
    )
    # Explanations run in their own bounded queue, off the prediction path (service/explain/).
    explain_max_rows: int = Field(
        default=DEFAULT_MAX_ROWS,
        ge=1,
        le=1024,
        description="Instances one explain request may carry.",
    )
    explain_queue_size: int = Field(
        default=DEFAULT_QUEUE_SIZE,
        ge=1,
        le=1024,
        description="Explain requests that may wait per model version; past it 503 at once.",
    )
    explain_deadline_s: float = Field(
        default=DEFAULT_DEADLINE_S,
        gt=0.0,
        le=3600.0,
        description="Seconds an explain request may take, waiting included; past it 503.",
    )
    explain_background_rows: int = Field(
        default=DEFAULT_BACKGROUND_ROWS,
        ge=1,
        le=10_000,
        description="Reference rows the attributions are computed against (fixed seed).",
    )
    confidence_level: float = Field(
        default=0.95,
        ge=MIN_CONFIDENCE_LEVEL,
        le=MAX_CONFIDENCE_LEVEL,
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
        description=(
            "Bearer token for model control; unset or empty turns model control off (403)."
        ),
    )
    version_policy: str = Field(
        default="latest:1",
        description="Which versions of each model to serve: 'latest', 'latest:N' or 'all'.",
    )
    # On by default: retraining while `make run` serves should just work. A scan lists a few
    # directories; loading happens only when a new version appears.
    poll_interval_s: float = Field(
        default=10.0,
        ge=0.0,
        le=86400.0,
        description="Seconds between repository scans for new versions (0: no hot reload).",
    )
    metrics: bool = Field(default=True, description="Serve Prometheus metrics at /metrics.")
    prediction_log_url: str = Field(
        default=DEFAULT_LOG_URL,
        min_length=1,
        description=(
            "Where every prediction is logged: a directory or filesystem URL ('./predictions/', "
            "'file:///srv/predictions', 's3://bucket/prefix') for a Parquet dataset, "
            "'postgresql://user:password@host:5432/db', or 'none' to turn the log off (the same "
            "setting the drift job reads)."
        ),
    )
    prediction_log_sample_rate: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of requests whose predictions are logged (1: all).",
    )
    prediction_log_retention_days: float = Field(
        default=0.0,
        ge=0.0,
        le=36500.0,
        description="Delete logged predictions and feedback older than this (0: keep all).",
    )
    prediction_log_queue_rows: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="Rows the in-memory log queue holds; past it rows are dropped and counted.",
    )
    prediction_log_spool_dir: Path = Field(
        default=Path("./prediction-spool"),
        description=(
            "Local directory of the log's fsync'd spools: open Parquet segments, and batches "
            "waiting while PostgreSQL is unreachable."
        ),
    )
    # Measured at 1-row x 32 connections on one core: 20 ms flushes cost about a tenth of the
    # throughput in fsyncs and per-flush work; 100 ms flushes held the GIL long enough to
    # double p99 (each flush builds its batch in one go). 50 ms kept most of both.
    prediction_log_flush_seconds: float = Field(
        default=0.05,
        ge=0.001,
        le=10.0,
        description=(
            "Queued predictions are written (fsync'd) this long after the first of them "
            "arrived: the most a SIGKILL loses. Shorter costs more fsyncs."
        ),
    )
    prediction_log_segment_rows: int = Field(
        default=200_000,
        ge=1,
        le=100_000_000,
        description="A Parquet segment is sealed (readable) when it holds this many rows.",
    )
    prediction_log_segment_seconds: float = Field(
        default=60.0,
        ge=0.05,
        le=86400.0,
        description="Seconds after which an open Parquet segment is sealed (readable).",
    )
    # Connection hygiene (service/http_protocol.py): a client that sends nothing, half its
    # headers or half its body is cut off instead of holding a file descriptor for ever.
    keep_alive_timeout_s: float = Field(
        default=5.0,
        gt=0.0,
        le=3600.0,
        description="Idle seconds before a kept-alive connection closes.",
    )
    header_timeout_s: float = Field(
        default=5.0,
        gt=0.0,
        le=600.0,
        description="Seconds a client has to send a request's headers before it is disconnected.",
    )
    body_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description=(
            "Base seconds a client has to send a request body; the deadline is this plus the "
            "body size (announced, capped at max_request_bytes) over body_min_bytes_per_s."
        ),
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description=(
            "Largest request line plus header block accepted (bigger: 431 and the connection "
            "closes)."
        ),
    )
    body_min_bytes_per_s: int = Field(
        default=256 * 1024,
        ge=1024,
        le=10 * 1024**3,
        description="Slowest upload rate the body deadline allows for, in bytes per second.",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description=(
            "Open connections (or running requests) per worker past which new requests get 503; "
            "keep it below the process's file-descriptor limit (ulimit -n)."
        ),
    )
    graceful_shutdown_s: float = Field(
        default=20.0,
        ge=0.0,
        le=3600.0,
        description=(
            "Seconds in-flight requests get to finish after SIGTERM; keep it below the "
            "orchestrator's grace period (Kubernetes: 30 s) so the lifespan can drain in time."
        ),
    )
    readiness: Literal["all", "any"] = Field(
        default="all",
        description=(
            "When /readyz and /v2/health/ready answer 200: 'all' (strict) once every model in "
            "the repository serves; 'any' once at least one model serves, so one broken model "
            "does not take the healthy ones out of the load balancer."
        ),
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

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> Settings:
        # A request is never split, so one larger than the queue bound could never be served.
        if self.max_queued_rows < self.max_rows_per_request:
            raise ValueError(
                f"max_queued_rows ({self.max_queued_rows}) must be at least max_rows_per_request "
                f"({self.max_rows_per_request}), or the largest requests could never be queued"
            )
        return self

    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError(
                f"grpc_port and port are both {self.port}: HTTP and gRPC need a port each "
                "(grpc_port 0 turns gRPC off)"
            )
        return self

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_no_token(cls, value: object) -> object:
        # An empty token (compose's `${PROBSERVE_ADMIN_TOKEN:-}`) must switch model control
        # off: left as "", the header "Bearer " would match it.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("prediction_log_url")
    @classmethod
    def _check_prediction_log_url(cls, value: str) -> str:
        from service.predlog.urls import parse_log_url

        parse_log_url(value)  # ValueError names the accepted forms
        return value.strip()

    @field_validator("providers")
    @classmethod
    def _check_providers(cls, value: str) -> str:
        # The runtime's own parser: a name it would refuse later is refused here.
        names, explicit = parse_provider_names(value)
        return ",".join(names) if explicit else "auto"

    @field_validator("version_policy")
    @classmethod
    def _check_version_policy(cls, value: str) -> str:
        return str(VersionPolicy.parse(value))

    @property
    def provider_list(self) -> list[str] | None:
        """ONNX Runtime provider names in priority order, or ``None`` for 'auto'."""
        names, explicit = parse_provider_names(self.providers)
        return names if explicit else None

    @property
    def latest_versions(self) -> int | None:
        """N of 'latest:N', or ``None`` when every version is served."""
        return VersionPolicy.parse(self.version_policy).latest

    def batching(self) -> BatchingConfig:
        """The batching configuration every model version's batcher gets."""
        return BatchingConfig(
            max_batch_size=self.max_batch_size,
            max_queue_delay_us=self.max_queue_delay_us,
            max_queued_rows=self.max_queued_rows,
            max_queue_wait_s=self.max_queue_wait_s or None,
            inline_max_us=self.inline_max_us,
        )

    def explainer(self) -> ExplainerSettings:
        """What every model version's explainer is built with."""
        return ExplainerSettings(
            max_rows=self.explain_max_rows,
            queue_size=self.explain_queue_size,
            deadline_s=self.explain_deadline_s,
            background_size=self.explain_background_rows,
        )

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
        # A URL may hold a password and a token is a secret: never echo them.
        secret = field.endswith(("_url", "_token"))
        got = "" if secret else f", got {err.get('input')!r}"
        parts.append(f"{field} ({env}{got}): {message}")
    return "invalid settings: " + "; ".join(parts)
