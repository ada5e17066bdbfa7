"""The explanation service object: one model version's explainer with its own bounded worker.

Explanations cost thousands of model rows per instance, so they never share the prediction
path: a fixed pool of worker threads (one by default) takes jobs from a bounded queue, a full
queue refuses at once (:class:`ExplainerBusy`, 503), and every job has a deadline after which it
is abandoned between model calls. The workers call the version's own ONNX Runtime session; ORT
and numpy release the GIL while they compute, so the prediction threads keep running
(docs/architecture.md, "Explanations").
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.errors import InvalidInput, ModelNotReady
from service.explain.background import Background, load_background
from service.explain.coalitions import MAX_EXACT_FEATURES
from service.explain.defaults import (
    DEFAULT_BACKGROUND_ROWS,
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_ROWS,
    DEFAULT_QUEUE_SIZE,
)
from service.explain.errors import ExplainerBusy, ExplanationDeadlineExceeded
from service.explain.result import InstanceExplanation
from service.explain.shapley import DEFAULT_PERMUTATIONS, Plan, choose_plan, explain_rows
from service.explain.valuation import DEFAULT_CHUNK_ROWS, ModelFunction, Stop, Stopped
from service.uncertainty import MAX_CONFIDENCE_LEVEL, MIN_CONFIDENCE_LEVEL

if TYPE_CHECKING:
    from service.runtime.model import LoadedModel
    from service.types import FeatureBatch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainerSettings:
    """What an operator may tune; every field has the default the service should start from."""

    #: Rows per explain request (400 above).
    max_rows: int = DEFAULT_MAX_ROWS
    #: Jobs waiting beyond those running; a full queue refuses at once (503).
    queue_size: int = DEFAULT_QUEUE_SIZE
    #: Seconds from submission to result; a job past it is abandoned (503).
    deadline_s: float = DEFAULT_DEADLINE_S
    #: Worker threads (each runs one job at a time on the version's session).
    workers: int = 1
    #: Reference rows drawn as the background, and the seed of the draw.
    background_size: int = DEFAULT_BACKGROUND_ROWS
    background_seed: int = 0
    #: Sampled orders per background row above ``max_exact_features`` features, and their seed.
    permutations: int = DEFAULT_PERMUTATIONS
    permutation_seed: int = 0
    max_exact_features: int = MAX_EXACT_FEATURES
    #: Model rows per ONNX Runtime call (bounds the memory a job holds).
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    #: Retry-After of a busy answer, whole seconds.
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        counts = {
            "max_rows": self.max_rows,
            "queue_size": self.queue_size,
            "workers": self.workers,
            "background_size": self.background_size,
            "chunk_rows": self.chunk_rows,
        }
        for what, value in counts.items():
            if value < 1:
                raise ValueError(f"explainer {what} must be at least 1, got {value}")
        if not self.deadline_s > 0:
            raise ValueError(f"explainer deadline_s must be positive, got {self.deadline_s}")
        if self.permutations < 2 or self.permutations % 2:
            raise ValueError(
                "explainer permutations must be an even number of at least 2 (pairs), got "
                f"{self.permutations}"
            )


@dataclass(frozen=True)
class ExplainOutcome:
    """A job's explanations (one per row, in order) and where its time went, in seconds."""

    explanations: list[InstanceExplanation]
    queue_wait_s: float
    compute_s: float

    @property
    def duration_s(self) -> float:
        """Submission to result: what the explain-duration metric observes."""
        return self.queue_wait_s + self.compute_s


@dataclass(eq=False)
class _Job:
    batch: FeatureBatch
    level: float
    future: Future[ExplainOutcome]
    submitted: float
    deadline_s: float
    stop: Stop


class Explainer:
    """Explains rows of one model version off the prediction path; see the module docstring."""

    def __init__(
        self,
        run: ModelFunction,
        features: Sequence[str],
        classes: Sequence[str],
        background: Background,
        *,
        model: str = "model",
        version: int = 0,
        settings: ExplainerSettings | None = None,
    ) -> None:
        settings = settings if settings is not None else ExplainerSettings()
        self.settings = settings
        self.run = run
        self.features = list(features)
        self.classes = list(classes)
        self.background = background
        self.model = model
        self.version = version
        self.max_rows = settings.max_rows
        self.deadline_s = settings.deadline_s
        self.plan: Plan = choose_plan(
            len(self.features),
            background.rows,
            permutations=settings.permutations,
            seed=settings.permutation_seed,
            max_exact_features=settings.max_exact_features,
        )
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=settings.queue_size)
        self._admit = threading.Lock()
        self._running: set[_Job] = set()
        self._closed = False
        self._threads = [
            threading.Thread(
                target=self._work, name=f"probserve-explain-{model}-{version}-{i}", daemon=True
            )
            for i in range(settings.workers)
        ]
        for thread in self._threads:
            thread.start()

    @classmethod
    def for_model(cls, model: LoadedModel, settings: ExplainerSettings | None = None) -> Explainer:
        """An explainer of a loaded version, its background drawn from the bundle's reference.

        Blocking (reads reference.parquet and runs the background rows): call it off the event
        loop. Raises BackgroundError when the bundle has no usable reference rows.
        """
        settings = settings if settings is not None else ExplainerSettings()
        manifest = model.manifest
        background = load_background(
            model.path,
            manifest,
            model.run,
            size=settings.background_size,
            seed=settings.background_seed,
        )
        return cls(
            model.run,
            manifest.feature_names,
            manifest.classes,
            background,
            model=model.name,
            version=model.version,
            settings=settings,
        )

    @property
    def method(self) -> str:
        """How attributions are computed: "exact" or "permutation(n=...)"."""
        return self.plan.method

    def submit(
        self, batch: FeatureBatch, level: float, *, deadline_s: float | None = None
    ) -> Future[ExplainOutcome]:
        """Queue ``batch`` for explanation; raise at once if it is too large or the queue full.

        ``deadline_s`` (from now) replaces the explainer's deadline for this job.
        """
        return self._submit(batch, level, deadline_s).future

    async def explain(
        self, batch: FeatureBatch, level: float, *, deadline_s: float | None = None
    ) -> ExplainOutcome:
        """Explain ``batch`` from a coroutine; a cancelled caller stops its job between chunks."""
        job = self._submit(batch, level, deadline_s)
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            job.stop.cancelled = True
            raise

    def close(self) -> None:
        """Refuse new jobs, fail the queued ones, stop the running ones and end the workers."""
        with self._admit:
            if self._closed:
                return
            self._closed = True
            for running in list(self._running):
                running.stop.cancelled = True
        while True:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                break
            if queued is not None and queued.future.set_running_or_notify_cancel():
                queued.future.set_exception(self._closed_error())
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def _submit(self, batch: FeatureBatch, level: float, deadline_s: float | None) -> _Job:
        if batch.rows > self.max_rows:
            raise InvalidInput(
                f"'instances' has {batch.rows} rows, more than the limit of {self.max_rows} "
                "per explanation request",
                field="instances",
                limit=self.max_rows,
            )
        if not MIN_CONFIDENCE_LEVEL <= level <= MAX_CONFIDENCE_LEVEL:
            raise InvalidInput(
                f"confidence_level must be between {MIN_CONFIDENCE_LEVEL} and "
                f"{MAX_CONFIDENCE_LEVEL}, got {level}",
                field="confidence_level",
            )
        if deadline_s is not None and not deadline_s > 0:
            raise ValueError(f"an explanation deadline must be positive, got {deadline_s}")
        seconds = self.deadline_s if deadline_s is None else deadline_s
        now = time.perf_counter()
        job = _Job(batch, level, Future(), now, seconds, Stop(now + seconds))
        with self._admit:
            if self._closed:
                raise self._closed_error()
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise self._busy(self._queue.qsize()) from None
        return job

    def _busy(self, waiting: int) -> ExplainerBusy:
        return ExplainerBusy(
            f"the explainer of model {self.model!r} version {self.version} is busy "
            f"({len(self._running)} running, {waiting} queued); retry later",
            retry_after_s=self.settings.retry_after_s,
            model=self.model,
            version=self.version,
        )

    def _closed_error(self) -> ModelNotReady:
        return ModelNotReady(
            f"model {self.model!r} version {self.version} was unloaded; its explainer is closed",
            model=self.model,
            version=self.version,
        )

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            with self._admit:
                self._running.add(job)
            try:
                job.future.set_result(self._explain(job))
            except BaseException as exc:  # the caller gets every failure, the worker lives on
                if not isinstance(exc, ExplanationDeadlineExceeded | ModelNotReady):
                    logger.exception("explaining %d rows of %s failed", job.batch.rows, self.model)
                job.future.set_exception(exc)
            finally:
                with self._admit:
                    self._running.discard(job)

    def _explain(self, job: _Job) -> ExplainOutcome:
        started = time.perf_counter()
        waited = started - job.submitted
        if job.stop.reached():
            raise self._stopped(job, f"waited {waited:.3f} s in the queue and was not computed")
        try:
            explanations = explain_rows(
                self.run,
                self.features,
                self.classes,
                job.batch.columns,
                self.background,
                level=job.level,
                plan=self.plan,
                chunk_rows=self.settings.chunk_rows,
                stop=job.stop,
            )
        except Stopped:
            ran = time.perf_counter() - started
            raise self._stopped(job, f"ran {ran:.3f} s (after {waited:.3f} s queued)") from None
        return ExplainOutcome(explanations, waited, time.perf_counter() - started)

    def _stopped(self, job: _Job, what: str) -> Exception:
        if job.stop.cancelled:
            if self._closed:
                return self._closed_error()
            return ExplanationDeadlineExceeded(
                "the explanation was cancelled by its caller", model=self.model
            )
        return ExplanationDeadlineExceeded(
            f"explaining {job.batch.rows} rows of model {self.model!r} version {self.version} "
            f"{what}: over the deadline of {job.deadline_s:g} s",
            model=self.model,
            version=self.version,
            deadline_s=job.deadline_s,
        )
