"""``probserve drift run`` and ``probserve drift serve``.

Every flag also reads ``PROBSERVE_<FLAG>`` (``--prediction-log-url`` <-
PROBSERVE_PREDICTION_LOG_URL). Exit codes: 0 the job ran (drift or not), 2 bad usage or bad
input, 3 not enough rows to judge, 1 anything else; each failure is one line on stderr.
"""

from __future__ import annotations

import atexit
import gc
import importlib.util
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

# Evidently ships telemetry: off before anything imports it (docs/architecture.md, toolchain).
os.environ.setdefault("DO_NOT_TRACK", "1")
# Arrow's default allocator (mimalloc) keeps what a 1M-row window freed; the system allocator
# hands large blocks back: 1,073 vs 1,019 MiB peak in make bench-drift. Read when pyarrow loads.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
# OpenBLAS's worker threads spin between calls, and the job's BLAS calls (Evidently's dot
# products over at most --max-rows values) are too small to share: one thread cut make
# bench-drift's CPU from ~20 to ~15 s, its wall time with it on a busy 2-core machine. Read when
# numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer
from pydantic import ValidationError

from monitoring.drift.settings import (
    DEFAULT_LOG_URL,
    DriftSettings,
    parse_column_values,
    parse_duration,
)
from monitoring.drift.summary import SensitiveFigures
from service.errors import UsageError

# The jobs import these lazily (start-up stays fast); missing, the root CLI must learn it when it
# loads this command, so it can name the extras to install instead of failing mid-run.
for _needed in ("pandas", "pyarrow", "evidently"):
    if importlib.util.find_spec(_needed) is None:
        raise ModuleNotFoundError(f"No module named {_needed!r}", name=_needed)

app = typer.Typer(
    name="drift",
    help="Drift of the served models: the prediction log against the bundle's reference data.",
    no_args_is_help=True,
    add_completion=False,
)

EXIT_NOT_ENOUGH_ROWS = 3


def _import_job() -> None:
    """Import the drift job (and Evidently) with the cyclic collector off, then freeze what the
    import built: ~300k objects that live as long as the process. Collections over them during
    the import and the run cost ~1.3 s of make bench-drift; frozen, later ones skip them."""
    if "monitoring.drift.job" in sys.modules:
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        import monitoring.drift.job  # noqa: F401
    finally:
        if enabled:
            gc.enable()
    gc.freeze()


def _env(flag: str) -> str:
    return "PROBSERVE_" + flag.upper().replace("-", "_")


RepositoryOpt = Annotated[
    Path, typer.Option(help="model repository directory", envvar=_env("model-repository"))
]
LogUrlOpt = Annotated[
    str,
    typer.Option(
        help="prediction log: a directory or s3:// URL (Parquet), postgresql://...",
        envvar=_env("prediction-log-url"),
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(help="window: rows logged in the last 30s/15m/24h/7d", envvar=_env("since")),
]
LastOpt = Annotated[
    int | None, typer.Option(min=1, help="window: the last N logged rows", envvar=_env("last"))
]
WorkspaceOpt = Annotated[
    Path, typer.Option(help="Evidently workspace directory", envvar=_env("workspace"))
]
MaxRowsOpt = Annotated[
    int,
    typer.Option(min=100, help="rows compared per side; more are sampled", envvar=_env("max-rows")),
]
MinRowsOpt = Annotated[
    int,
    typer.Option(min=1, help="fewer rows in the window: exit 3", envvar=_env("min-rows")),
]
MethodOpt = Annotated[
    str | None,
    typer.Option(
        help="Evidently stat test for every column (ks, wasserstein, psi, jensenshannon, ...) "
        "[default: Evidently's per-column choice]",
        envvar=_env("method"),
    ),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        help="drift threshold for every column [default: the method's]", envvar=_env("threshold")
    ),
]
ColumnMethodOpt = Annotated[
    list[str] | None,
    typer.Option(help="COLUMN=METHOD, repeatable", envvar=_env("column-method")),
]
ColumnThresholdOpt = Annotated[
    list[str] | None,
    typer.Option(help="COLUMN=THRESHOLD, repeatable", envvar=_env("column-threshold")),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        help="output directory [default: ./drift/<model>/<UTC timestamp>/]", envvar=_env("output")
    ),
]


AdaptWindowOpt = Annotated[
    int,
    typer.Option(
        min=20,
        help="labelled rows a conformal recalibration takes",
        envvar=_env("adapt-window-rows"),
    ),
]
AdaptMinOpt = Annotated[
    int,
    typer.Option(
        min=20,
        help="fewest labelled rows to publish a recalibration",
        envvar=_env("adapt-min-rows"),
    ),
]


def _settings(**values: object) -> DriftSettings:
    method_items = values.pop("column_method") or []
    threshold_items = values.pop("column_threshold") or []
    since = values.pop("since")
    if since is not None and values.get("last") is not None:
        raise UsageError("give --since or --last, not both")
    thresholds: dict[str, float] = {}
    for name, text in parse_column_values(list(threshold_items), "--column-threshold").items():  # type: ignore[call-overload]
        try:
            thresholds[name] = float(text)
        except ValueError:
            raise UsageError(f"--column-threshold {name}={text}: not a number") from None
    try:
        return DriftSettings(
            **values,  # type: ignore[arg-type]
            since_seconds=parse_duration(str(since), "--since") if since is not None else None,
            column_method=parse_column_values(list(method_items), "--column-method"),  # type: ignore[call-overload]
            column_threshold=thresholds,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"{where}: {first['msg']}") from None


def _fail(message: str, code: int) -> SystemExit:
    typer.echo(f"error: {message}", err=True)
    # SystemExit, not typer.Exit: the root CLI runs commands with standalone_mode=False, where
    # Click turns typer.Exit into a return value that the root does not pass on as the status.
    return SystemExit(code)


@app.command("run")
def run_command(
    model: Annotated[str, typer.Option(help="model name", envvar=_env("model"))],
    version: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="bundle version and log rows of that version [default: latest "
            "bundle, rows of every version]",
            envvar=_env("version"),
        ),
    ] = None,
    model_repository: RepositoryOpt = Path("models"),
    prediction_log_url: LogUrlOpt = DEFAULT_LOG_URL,
    last: LastOpt = None,
    since: SinceOpt = None,
    output: OutputOpt = None,
    workspace: WorkspaceOpt = Path("drift/workspace"),
    pushgateway: Annotated[
        str | None,
        typer.Option(help="Pushgateway URL (host:port or http://...)", envvar=_env("pushgateway")),
    ] = None,
    max_rows: MaxRowsOpt = 100_000,
    min_rows: MinRowsOpt = 30,
    method: MethodOpt = None,
    threshold: ThresholdOpt = None,
    column_method: ColumnMethodOpt = None,
    column_threshold: ColumnThresholdOpt = None,
    adapt_conformal: Annotated[
        bool,
        typer.Option(
            help="recalibrate the conformal sets on the newest feedback labels and publish them "
            "beside the bundle (servers pick them up on their next poll)",
            envvar=_env("adapt-conformal"),
        ),
    ] = False,
    adapt_window_rows: AdaptWindowOpt = 500,
    adapt_min_rows: AdaptMinOpt = 100,
) -> None:
    """Run the drift job once (for a CronJob): report.html, summary.json, workspace snapshot."""
    _import_job()
    from monitoring.drift.computing import NotEnoughRows
    from monitoring.drift.job import PushFailed, run_job

    # The process ends after this run. At exit the interpreter would collect the whole object
    # graph (Evidently's and plotly's) only to hand its memory back to the OS: ~0.9 s of make
    # bench-drift's wall time. Frozen objects are left out of that collection.
    atexit.register(gc.freeze)

    try:
        settings = _settings(
            model_repository=model_repository,
            prediction_log_url=prediction_log_url,
            last=last,
            since=since,
            output=output,
            workspace=workspace,
            pushgateway=pushgateway,
            max_rows=max_rows,
            min_rows=min_rows,
            method=method,
            threshold=threshold,
            column_method=column_method,
            column_threshold=column_threshold,
            adapt_conformal=[model] if adapt_conformal else [],
            adapt_window_rows=adapt_window_rows,
            adapt_min_rows=adapt_min_rows,
        )
        outcome = run_job(settings, model, version)
    except UsageError as exc:
        raise _fail(str(exc), 2) from None
    except NotEnoughRows as exc:
        raise _fail(str(exc), EXIT_NOT_ENOUGH_ROWS) from None
    except PushFailed as exc:
        raise _fail(str(exc), 1) from None
    s = outcome.summary
    drifted = [name for name, c in s.columns.items() if c.drift_detected]
    typer.echo(
        f"{s.model}: dataset_drift={str(s.dataset_drift).lower()} "
        f"share_drifted={s.share_drifted:.3f} ({len(drifted)}/{len(s.columns)} columns"
        f"{': ' + ', '.join(drifted) if drifted else ''}) rows={s.rows_current}"
        f"{' (sampled)' if s.sampled else ''} estimated_accuracy={s.estimated_accuracy:.4f} "
        f"-> {outcome.output}"
    )
    if s.conformal is not None and s.conformal.published_revision is not None:
        typer.echo(
            f"{s.model}: conformal sets recalibrated on {s.conformal.labelled_rows} labelled "
            f"rows, revision {s.conformal.published_revision}"
        )
    if s.fairness is not None:
        for name, column in s.fairness.columns.items():
            typer.echo(f"{s.model}: fairness by {name}: {_fairness_text(column)}")
    for note in s.warnings:
        typer.echo(f"warning: {note}", err=True)


def _fairness_text(column: SensitiveFigures) -> str:
    """The accuracy gaps of one sensitive column and its too-small groups, for people."""
    from monitoring.drift.fairness import ESTIMATED_ACCURACY, REALIZED_ACCURACY

    gaps = [
        f"{figure} gap {gap.difference:.3f} ({gap.lowest} lowest)"
        for figure, gap in column.disparity.items()
        if figure in (ESTIMATED_ACCURACY, REALIZED_ACCURACY)
    ]
    small = [group for group, figures in column.groups.items() if figures.too_small]
    text = ", ".join(gaps) or "no accuracy gap (fewer than two groups large enough)"
    return text + (f"; too small: {', '.join(small)}" if small else "")


@app.command("serve")
def serve_command(
    every: Annotated[str, typer.Option(help="schedule: 30s, 15m, 1h", envvar=_env("every"))],
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="model to watch, repeatable [default: every model in the repository]",
            envvar=_env("model"),
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="/metrics host", envvar=_env("host"))] = ("127.0.0.1"),
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="/metrics port", envvar=_env("port"))
    ] = 9108,
    model_repository: RepositoryOpt = Path("models"),
    prediction_log_url: LogUrlOpt = DEFAULT_LOG_URL,
    last: LastOpt = None,
    since: SinceOpt = None,
    output: OutputOpt = None,
    workspace: WorkspaceOpt = Path("drift/workspace"),
    max_rows: MaxRowsOpt = 100_000,
    min_rows: MinRowsOpt = 30,
    method: MethodOpt = None,
    threshold: ThresholdOpt = None,
    column_method: ColumnMethodOpt = None,
    column_threshold: ColumnThresholdOpt = None,
    adapt_conformal: Annotated[
        list[str] | None,
        typer.Option(
            help="model whose conformal sets are recalibrated on feedback labels, repeatable",
            envvar=_env("adapt-conformal"),
        ),
    ] = None,
    adapt_window_rows: AdaptWindowOpt = 500,
    adapt_min_rows: AdaptMinOpt = 100,
) -> None:
    """Run the drift job on a schedule for each model and serve /metrics and /healthz."""
    from monitoring.drift.monitor import Monitor, metrics_server

    try:
        interval = parse_duration(every, "--every")
        settings = _settings(
            model_repository=model_repository,
            prediction_log_url=prediction_log_url,
            last=last,
            since=since,
            output=output,
            workspace=workspace,
            pushgateway=None,
            max_rows=max_rows,
            min_rows=min_rows,
            method=method,
            threshold=threshold,
            column_method=column_method,
            column_threshold=column_threshold,
            adapt_conformal=list(adapt_conformal or []),
            adapt_window_rows=adapt_window_rows,
            adapt_min_rows=adapt_min_rows,
        )
        monitor = Monitor(settings, list(model or []), interval)
        server = metrics_server(monitor.metrics, host, port)
    except UsageError as exc:
        raise _fail(str(exc), 2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    def _stop(signum: int, frame: FrameType | None) -> None:
        monitor.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    thread = threading.Thread(target=server.serve_forever, name="drift-metrics", daemon=True)
    thread.start()
    typer.echo(f"drift monitor: /metrics on http://{host}:{port}, every {every}", err=True)
    try:
        monitor.loop()
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.exit(app())
