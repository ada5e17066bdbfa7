"""``probserve serve``: settings from flags and ``PROBSERVE_*``, logging, uvicorn.

Every flag defaults to ``None`` and is passed to :class:`~service.settings.Settings` only when
given, so the environment and the defaults are read in exactly one place (the settings class).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from service.errors import UsageError
from service.settings import ENV_PREFIX, Settings, describe_validation_error

logger = logging.getLogger("probserve.serve")


def _opt(help_text: str, name: str) -> Any:
    return typer.Option(help=f"{help_text} [env: {ENV_PREFIX}{name}]", show_default=False)


def serve(
    model_repository: Annotated[
        Path | None, _opt("Model repository directory (default ./models).", "MODEL_REPOSITORY")
    ] = None,
    host: Annotated[str | None, _opt("Address to bind (default 127.0.0.1).", "HOST")] = None,
    port: Annotated[int | None, _opt("TCP port (default 8000).", "PORT")] = None,
    grpc_port: Annotated[
        int | None, _opt("gRPC port (default 8001; 0 turns gRPC off).", "GRPC_PORT")
    ] = None,
    workers: Annotated[int | None, _opt("Server processes (default 1).", "WORKERS")] = None,
    providers: Annotated[
        str | None, _opt("Execution providers: auto, cpu, cuda or a list.", "PROVIDERS")
    ] = None,
    intra_op_threads: Annotated[
        int | None, _opt("ONNX Runtime intra-op threads per model (default 1).", "INTRA_OP_THREADS")
    ] = None,
    max_queue_delay_us: Annotated[
        int | None, _opt("Batching delay in microseconds; 0 disables.", "MAX_QUEUE_DELAY_US")
    ] = None,
    max_batch_size: Annotated[
        int | None, _opt("Rows per batched ONNX call (default 256).", "MAX_BATCH_SIZE")
    ] = None,
    inline_max_us: Annotated[
        int | None,
        _opt(
            "Idle fast path: run small requests of models this fast (us) on the event loop "
            "(default 500; 0 off).",
            "INLINE_MAX_US",
        ),
    ] = None,
    max_queued_rows: Annotated[
        int | None,
        _opt("Rows one model's queue holds before 503s (default 65536).", "MAX_QUEUED_ROWS"),
    ] = None,
    max_queue_wait_s: Annotated[
        float | None, _opt("Seconds a request may stay queued; 0 no limit.", "MAX_QUEUE_WAIT_S")
    ] = None,
    max_rows_per_request: Annotated[
        int | None, _opt("Rows one request may carry (default 4096).", "MAX_ROWS_PER_REQUEST")
    ] = None,
    confidence_level: Annotated[
        float | None, _opt("Default confidence level (default 0.95).", "CONFIDENCE_LEVEL")
    ] = None,
    explain_max_rows: Annotated[
        int | None, _opt("Rows one explain request may carry (default 16).", "EXPLAIN_MAX_ROWS")
    ] = None,
    explain_queue_size: Annotated[
        int | None,
        _opt("Explain requests waiting per model before 503 (default 4).", "EXPLAIN_QUEUE_SIZE"),
    ] = None,
    explain_deadline_s: Annotated[
        float | None,
        _opt("Seconds an explain request may take (default 30).", "EXPLAIN_DEADLINE_S"),
    ] = None,
    explain_background_rows: Annotated[
        int | None,
        _opt(
            "Reference rows attributions are computed against (default 50).",
            "EXPLAIN_BACKGROUND_ROWS",
        ),
    ] = None,
    max_request_bytes: Annotated[
        int | None, _opt("Largest request body (default 8 MiB).", "MAX_REQUEST_BYTES")
    ] = None,
    admin_token: Annotated[
        str | None, _opt("Bearer token for model control (unset: off).", "ADMIN_TOKEN")
    ] = None,
    version_policy: Annotated[
        str | None, _opt("'latest:N' or 'all' (default latest:1).", "VERSION_POLICY")
    ] = None,
    poll_interval_s: Annotated[
        float | None, _opt("Hot-reload poll interval in seconds; 0 off.", "POLL_INTERVAL_S")
    ] = None,
    metrics: Annotated[
        bool | None, _opt("Serve Prometheus metrics at /metrics (default on).", "METRICS")
    ] = None,
    prediction_log_url: Annotated[
        str | None,
        _opt(
            "Prediction log: a directory or s3:// URL (Parquet), postgresql://..., or none "
            "(default ./predictions/).",
            "PREDICTION_LOG_URL",
        ),
    ] = None,
    prediction_log_sample_rate: Annotated[
        float | None,
        _opt("Share of requests logged (default 1).", "PREDICTION_LOG_SAMPLE_RATE"),
    ] = None,
    prediction_log_retention_days: Annotated[
        float | None,
        _opt("Delete log rows older than this; 0 keeps all.", "PREDICTION_LOG_RETENTION_DAYS"),
    ] = None,
    prediction_log_queue_rows: Annotated[
        int | None,
        _opt("In-memory log queue bound in rows (default 100000).", "PREDICTION_LOG_QUEUE_ROWS"),
    ] = None,
    prediction_log_spool_dir: Annotated[
        Path | None,
        _opt(
            "Local spool directory (open segments, batches waiting for PostgreSQL).",
            "PREDICTION_LOG_SPOOL_DIR",
        ),
    ] = None,
    prediction_log_flush_seconds: Annotated[
        float | None,
        _opt(
            "Write queued rows this long after the first arrived (default 0.05).",
            "PREDICTION_LOG_FLUSH_SECONDS",
        ),
    ] = None,
    prediction_log_segment_rows: Annotated[
        int | None,
        _opt(
            "Seal a Parquet segment at this many rows (default 200000).",
            "PREDICTION_LOG_SEGMENT_ROWS",
        ),
    ] = None,
    prediction_log_segment_seconds: Annotated[
        float | None,
        _opt(
            "Seal a Parquet segment this long after it opened (default 60).",
            "PREDICTION_LOG_SEGMENT_SECONDS",
        ),
    ] = None,
    log_level: Annotated[str | None, _opt("debug, info, warning, error.", "LOG_LEVEL")] = None,
    log_format: Annotated[str | None, _opt("plain or json (JSON lines).", "LOG_FORMAT")] = None,
    access_log: Annotated[
        bool | None, _opt("Log every request (off by default: it costs throughput).", "ACCESS_LOG")
    ] = None,
    keep_alive_timeout_s: Annotated[
        float | None, _opt("Idle keep-alive seconds (default 5).", "KEEP_ALIVE_TIMEOUT_S")
    ] = None,
    header_timeout_s: Annotated[
        float | None, _opt("Seconds to send request headers (default 5).", "HEADER_TIMEOUT_S")
    ] = None,
    body_timeout_s: Annotated[
        float | None, _opt("Base seconds to send a body (default 10).", "BODY_TIMEOUT_S")
    ] = None,
    max_header_bytes: Annotated[
        int | None,
        _opt("Largest request header block (default 65536 B; bigger: 431).", "MAX_HEADER_BYTES"),
    ] = None,
    body_min_bytes_per_s: Annotated[
        int | None,
        _opt("Slowest upload rate allowed for (default 262144 B/s).", "BODY_MIN_BYTES_PER_S"),
    ] = None,
    max_connections: Annotated[
        int | None, _opt("Connections per worker before 503 (default 1000).", "MAX_CONNECTIONS")
    ] = None,
    graceful_shutdown_s: Annotated[
        float | None, _opt("Seconds to finish after SIGTERM (default 20).", "GRACEFUL_SHUTDOWN_S")
    ] = None,
    readiness: Annotated[
        str | None, _opt("'all' models serve (default) or 'any' model serves.", "READINESS")
    ] = None,
) -> None:
    """Serve the models of a repository over HTTP (native v1 and KServe V2) and gRPC."""
    given = {k: v for k, v in locals().items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc)) from None
    run_server(settings, given)


#: uvicorn's exit code when the server cannot start (uvicorn.server.STARTUP_FAILURE).
STARTUP_FAILURE = 3


def _exit_after_graceful_shutdown(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def run_server(settings: Settings, given: dict[str, Any]) -> None:
    """Configure logging, check the providers, and run uvicorn until SIGTERM/SIGINT."""

    from service.bundle.repository import check_not_a_file
    from service.http.protocol import protocol_factory
    from service.logging_setup import configure_logging
    from service.runtime import resolve_providers

    configure_logging(settings.log_level, settings.log_format)
    if "admin_token" in given:
        # Every local user can read a process's arguments (ps, /proc/<pid>/cmdline).
        logger.warning(
            "--admin-token is visible to every local user in the process list; set "
            "PROBSERVE_ADMIN_TOKEN in the environment instead"
        )
    # Fail now, with exit code 2, if CUDA was asked for explicitly and cannot start: inside the
    # lifespan the same error would only abort uvicorn's start-up with a traceback.
    chosen = resolve_providers(settings.providers)
    logger.info("execution providers: %s", ", ".join(chosen.providers))
    check_not_a_file(settings.model_repository)
    if not settings.model_repository.is_dir():
        # Not an error: with hot reload on, models may be synced in after start (a sidecar,
        # a volume); the service stays not-ready until one loads.
        logger.warning(
            "model repository %s does not exist: the service will not be ready until a model "
            "appears (train one with 'probserve train')",
            settings.model_repository,
        )
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "log_config": None,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "limit_concurrency": settings.max_connections,
        # Header and body deadlines and the lingering close after a 413.
        "http": protocol_factory(settings),
        "server_header": False,
    }
    # uvicorn shuts down gracefully on SIGTERM (in-flight requests finish, the lifespan drains
    # the batchers) and then re-raises the signal to the handler that was there before it.
    # Make that handler a clean exit, so an orderly stop exits 0 rather than "killed by signal".
    signal.signal(signal.SIGTERM, _exit_after_graceful_shutdown)
    try:
        _run_uvicorn(settings, given, common)
    except SystemExit as exc:
        # uvicorn exits 3 when it cannot start, after logging why (port taken, bad host).
        if exc.code == STARTUP_FAILURE:
            raise UsageError(
                f"the server could not start on {settings.host}:{settings.port} (gRPC "
                f"{settings.grpc_port}; the log lines above say why): pick another --port, "
                "--grpc-port or --host, or stop what holds it"
            ) from None
        raise


def prepare_multiprocess_metrics() -> Path:
    """Point every worker at one empty metrics directory, so /metrics sums all of them.

    prometheus-client's multiprocess mode reads PROMETHEUS_MULTIPROC_DIR when a worker imports
    it. A directory the user set is emptied first (stale files of an earlier run would count
    twice); otherwise a fresh temporary one is made.
    """
    from service.telemetry.metrics import MULTIPROC_ENV

    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="probserve-metrics-"))
        os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def _run_uvicorn(settings: Settings, given: dict[str, Any], common: dict[str, Any]) -> None:
    import uvicorn

    if settings.workers == 1:
        from service.http.app import create_app

        uvicorn.run(create_app(settings), **common)
        return
    # Worker processes start fresh interpreters: hand them the flags through the environment,
    # which is where their Settings() will read them.
    for key, value in given.items():
        os.environ[f"{ENV_PREFIX}{key.upper()}"] = str(value)
    prepare_multiprocess_metrics()
    uvicorn.run(
        "service.http.app:create_app_from_env", factory=True, workers=settings.workers, **common
    )
