"""``probserve drift serve``: the drift job on a schedule, with its own /metrics and /healthz.

A failed run keeps the last good figures of that model and counts the failure by reason:
``not_enough_rows``, ``bad_input`` (unknown model, a log whose columns differ, ...), ``error``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitoring.drift.computing import NotEnoughRows
from monitoring.drift.job import JobOutcome, run_job
from monitoring.drift.metrics import DriftMetrics
from monitoring.drift.settings import DriftSettings
from monitoring.drift.writing import default_output
from service.bundle import model_names
from service.errors import UsageError

log = logging.getLogger("probserve.drift")

#: One run for one model: :func:`monitoring.drift.job.run_job` unless a caller injects another.
Job = Callable[[DriftSettings, str], JobOutcome]


class Monitor:
    """Runs the job for each model every ``every`` seconds until :meth:`stop`."""

    def __init__(
        self,
        settings: DriftSettings,
        models: list[str],
        every: float,
        metrics: DriftMetrics | None = None,
        job: Job = run_job,
    ) -> None:
        self.settings = settings
        self.job = job
        self.models = models
        self.every = every
        self.metrics = metrics or DriftMetrics()
        self._stop = threading.Event()

    def targets(self) -> list[str]:
        """The ``--model`` ones, else every model in the repository now."""
        return self.models or model_names(self.settings.model_repository)

    def run_model(self, model: str) -> bool:
        """One run for ``model``; True when it succeeded."""
        output = default_output(model)
        if self.settings.output is not None:
            output = self.settings.output / output.relative_to("drift")
        # The monitor serves its metrics itself: no Pushgateway push per run.
        settings = self.settings.model_copy(update={"output": output, "pushgateway": None})
        try:
            outcome = self.job(settings, model)
        except NotEnoughRows as exc:
            reason, message = "not_enough_rows", str(exc)
        except UsageError as exc:
            reason, message = "bad_input", str(exc)
        except Exception as exc:  # keep serving: one model's failure is a counted metric
            reason, message = "error", f"{type(exc).__name__}: {exc}"
        else:
            self.metrics.record(
                outcome.summary,
                reference_accuracy=outcome.reference_accuracy,
                finished_at=outcome.finished_at,
            )
            log.info(
                "drift of %s: dataset_drift=%s share=%.3f rows=%d",
                model,
                outcome.summary.dataset_drift,
                outcome.summary.share_drifted,
                outcome.summary.rows_current,
            )
            return True
        self.metrics.fail(model, reason)
        log.warning("drift run of %s failed (%s): %s", model, reason, message)
        return False

    def run_all(self) -> None:
        """One round over every target model."""
        for model in self.targets():
            if self._stop.is_set():
                return
            self.run_model(model)

    def loop(self) -> None:
        """Run a round now, then every ``every`` seconds, until stopped."""
        while not self._stop.is_set():
            self.run_all()
            self._stop.wait(self.every)

    def stop(self) -> None:
        """Ask :meth:`loop` to return after the current run."""
        self._stop.set()


def metrics_server(metrics: DriftMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server with ``/metrics`` and ``/healthz`` (started by the caller)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, kind = generate_latest(metrics.registry), CONTENT_TYPE_LATEST
                status = 200
            elif path == "/healthz":
                body, kind, status = b"ok\n", "text/plain; charset=utf-8", 200
            else:
                body, kind, status = b"not found\n", "text/plain; charset=utf-8", 404
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes every few seconds would flood the log

    try:
        return ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
