"""What the request path needs of one served version, built once at load time.

The serving layer owns this step, not the runtime: ONNX Runtime gives member probabilities, and
turning them into means, intervals, sets and labels once per batch is the uncertainty step the
batcher runs for the pipeline (docs/architecture.md, "Request path", step 4).
:class:`VersionLoader` is the registry's one loader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from service.batching import (
    BatchingConfig,
    BatchObserver,
    DynamicBatcher,
    HeldRequests,
    ShedObserver,
)
from service.bundle import (
    ADAPTED_CONFORMAL_FILE,
    AdaptedConformal,
    AdaptedConformalError,
    read_adapted_conformal,
)
from service.explain import Explainer, ExplainerSettings
from service.runtime import ExecutionProviders, LoadedModel, load_model
from service.types import ModelHandle, Uncertainty
from service.uncertainty import served

logger = logging.getLogger(__name__)


class ConformalCalibration:
    """The scores a version's prediction sets come from: the bundle's calibration split, or the
    newest recalibration the drift monitor published beside the bundle (docs/architecture.md,
    "Monitoring"). Swapped in one assignment; a batch reads it once."""

    __slots__ = ("_bundle_scores", "_signature", "adapted", "current")

    def __init__(self, bundle_scores: NDArray[np.float64]) -> None:
        """Start from the bundle's own scores (revision 0)."""
        self._bundle_scores = bundle_scores
        self._signature: tuple[int, int] | None = None
        #: The adapted file in use, None while the bundle's scores serve.
        self.adapted: AdaptedConformal | None = None
        #: (sorted scores, revision): what the next batch uses.
        self.current: tuple[NDArray[np.float64], int] = (bundle_scores, 0)

    def refresh(self, bundle_dir: Path, model: str, version: int) -> bool:
        """Adopt the file beside the bundle if it changed since the last look; whether the
        revision in use changed. A bad file is logged once and the scores in use stay."""
        try:
            stat = (bundle_dir / ADAPTED_CONFORMAL_FILE).stat()
            signature: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            signature = None
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            adapted = read_adapted_conformal(bundle_dir, model, version)
        except AdaptedConformalError as exc:
            logger.warning(
                "model %s version %s: adapted conformal scores refused, keeping revision %d: %s",
                model, version, self.current[1], exc,
            )  # fmt: skip
            return False
        before = self.current[1]
        if adapted is None:
            self.adapted, self.current = None, (self._bundle_scores, 0)
        else:
            scores = np.asarray(adapted.scores, dtype=np.float64)
            self.adapted, self.current = adapted, (scores, adapted.revision)
            logger.info(
                "model %s version %s: conformal sets from adapted revision %d (%d labelled rows)",
                model, version, adapted.revision, adapted.window_rows,
            )  # fmt: skip
        return self.current[1] != before


def derive_uncertainty(
    member_probabilities: NDArray[np.float32],
    level: float,
    *,
    conformal: ConformalCalibration,
    class_labels: NDArray[np.object_],
) -> Uncertainty:
    """Mean probabilities, ``level`` intervals, ``level`` conformal sets and labels, [N, ...].

    Runs in the batcher's worker thread once per batch, so its numpy calls are paid per batch.
    """
    scores, revision = conformal.current  # once: a swap mid-batch cannot mix two revisions
    out = served(member_probabilities, level, scores)
    index = out.label_index
    return Uncertainty(
        out.probabilities, out.lower, out.upper, out.sets, index, class_labels[index], revision
    )


@dataclass(frozen=True, eq=False)
class ServedVersion:
    """A loaded model, its batcher and the manifest data the hot path reads, as numpy arrays."""

    model: LoadedModel
    batcher: DynamicBatcher[Uncertainty]
    #: The conformal scores the sets come from (the bundle's, or adapted ones).
    conformal: ConformalCalibration
    #: How this version's explainer is built, on the first explain request (its background
    #: costs a read of the reference and a model run: most versions are never explained).
    explain_settings: ExplainerSettings = field(default_factory=ExplainerSettings)
    _explainer: Explainer | None = field(default=None, init=False)
    _explainer_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def explainer(self) -> Explainer:
        """This version's explainer, built off the event loop the first time it is asked for."""
        async with self._explainer_lock:
            if self._explainer is None:
                built = await asyncio.to_thread(
                    Explainer.for_model, self.model, self.explain_settings
                )
                object.__setattr__(self, "_explainer", built)
            assert self._explainer is not None
            return self._explainer

    def conformal_state(self) -> dict[str, object]:
        """Where the sets come from now, for model metadata: source, revision, window, time."""
        adapted = self.conformal.adapted
        if adapted is None:
            return {"source": "bundle", "revision": 0}
        return {
            "source": "adapted",
            "method": adapted.method,
            "revision": adapted.revision,
            "window_rows": adapted.window_rows,
            "published_at": adapted.created_at,
        }

    def refresh_conformal(self) -> bool:
        """Look for newly published adapted scores (blocking: a stat, a small read)."""
        model = self.model
        return self.conformal.refresh(model.path, model.name, model.version)

    @classmethod
    def create(
        cls,
        model: LoadedModel,
        batching: BatchingConfig,
        *,
        batch_observers: Sequence[BatchObserver] = (),
        shed_observers: Sequence[ShedObserver] = (),
        requests: HeldRequests | None = None,
        explain: ExplainerSettings | None = None,
    ) -> ServedVersion:
        """Precompute the arrays from the manifest and build the version's batcher."""
        manifest = model.manifest
        # An object array, so ``labels[argmax]`` labels a whole batch at once.
        labels = np.array(manifest.classes, dtype=object)
        conformal = ConformalCalibration(
            np.asarray(manifest.calibration.conformal_scores, dtype=np.float64)
        )
        conformal.refresh(model.path, model.name, model.version)
        batcher: DynamicBatcher[Uncertainty] = DynamicBatcher(
            model.run,
            batching,
            derive=partial(derive_uncertainty, conformal=conformal, class_labels=labels),
            model=model.name,
            version=model.version,
            observers=batch_observers,
            shed_observers=shed_observers,
            requests=requests,
        )
        return cls(model, batcher, conformal, explain or ExplainerSettings())

    async def close(self) -> None:
        """Drain the batcher: queued and running batches finish on this version; explanations
        still running are stopped (their callers get 503)."""
        await self.batcher.close()
        if self._explainer is not None:
            await asyncio.to_thread(self._explainer.close)


@dataclass(frozen=True)
class VersionLoader:
    """Bundle directory -> verified, warmed-up, served :class:`ModelHandle` (the registry's loader).

    Everything the registry need not know (providers, threads, batching, telemetry of batches)
    is fixed here once, so the registry deals only in versions and policy.
    """

    providers: ExecutionProviders
    batching: BatchingConfig
    intra_op_threads: int = 1
    batch_observers: Sequence[BatchObserver] = field(default=())
    shed_observers: Sequence[ShedObserver] = field(default=())
    requests: HeldRequests | None = None
    explain: ExplainerSettings = field(default_factory=ExplainerSettings)

    def __call__(self, path: Path, name: str, version: int) -> ModelHandle:
        """Load, verify and warm up one version (blocking: the registry runs it in a thread)."""
        loaded = load_model(
            path,
            name=name,
            version=version,
            providers=self.providers,
            intra_op_threads=self.intra_op_threads,
        )
        runtime = ServedVersion.create(
            loaded,
            self.batching,
            batch_observers=self.batch_observers,
            shed_observers=self.shed_observers,
            requests=self.requests,
            explain=self.explain,
        )
        return ModelHandle(
            loaded.name, loaded.version, loaded.manifest, loaded.provider, runtime=runtime
        )
