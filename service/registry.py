"""The model registry: which bundle versions serve, loading, hot reload and model control.

Reads the repository layout (``<repo>/<model>/<version>/``), loads the versions the version
policy selects (the newest that verify), and publishes them for :meth:`ModelRegistry.resolve`.
Every change builds the new versions fully (load, verify, warm up) in a worker thread and then
replaces the model's serving set in one assignment, so a request sees either the old set or the
new one. Requests keep the :class:`~service.types.ModelHandle` they resolved, and with it
the session and batcher of their version; a version that stops serving is drained, not killed.

The registry knows versions and policy only: one injected loader turns a bundle directory into a
served handle, and model events (loaded, refused, unloaded) go to whoever subscribed (telemetry),
as MLServer's registry does (docs/architecture.md, "Telemetry seam").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from service.bundle import MANIFEST_FILE, MODEL_FILE, bundle_path, model_names, model_versions
from service.errors import ModelLoadError, ModelNotFound, ModelNotReady
from service.readiness import Readiness, is_ready
from service.types import IndexEntry, ModelHandle, ModelState
from service.version_policy import VersionPolicy

logger = logging.getLogger(__name__)

#: (mtime_ns, size) of the manifest and the graph: a failed version is retried only when these
#: change (a copy finished, a file was fixed), not on every poll.
Signature = tuple[int, ...]


#: Bundle directory, model name, version -> a verified, served handle (blocking; run in a
#: thread). Raises ModelLoadError with the reason a bundle is refused.
ModelLoader = Callable[[Path, str, int], ModelHandle]


class ModelEvents(Protocol):
    """What the registry reports (telemetry subscribes); methods must not block or raise."""

    def model_loaded(self, handle: ModelHandle) -> None:
        """A version now serves."""

    def model_refused(self, name: str, version: int, reason: str) -> None:
        """A version failed to load or verify; ``reason`` names no filesystem path."""

    def model_unloaded(self, name: str, version: int) -> None:
        """A version stopped serving (replaced, unloaded, or gone from disk)."""

    def conformal_adopted(self, handle: ModelHandle, revision: int) -> None:
        """A served version's sets now come from another conformal revision (0: the bundle's)."""


class _NoEvents:
    def model_loaded(self, handle: ModelHandle) -> None:
        pass

    def conformal_adopted(self, handle: ModelHandle, revision: int) -> None:
        pass

    def model_refused(self, name: str, version: int, reason: str) -> None:
        pass

    def model_unloaded(self, name: str, version: int) -> None:
        pass


@dataclass(frozen=True)
class _ServingSet:
    versions: Mapping[int, ModelHandle]
    default: ModelHandle | None


_EMPTY = _ServingSet({}, None)


@dataclass
class _Failure:
    signature: Signature
    reason: str


@dataclass
class _DiskView:
    versions: dict[str, dict[int, Signature]] = field(default_factory=dict)


class ModelRegistry:
    """Loads and serves the bundles of one repository; use from one event loop."""

    def __init__(
        self,
        repository: Path,
        loader: ModelLoader,
        *,
        version_policy: VersionPolicy | str | int = "latest",
        poll_interval_s: float = 0.0,
        events: ModelEvents | None = None,
    ) -> None:
        """Nothing is loaded until start(); ``loader`` builds each served version."""
        self.repository = Path(repository)
        self.policy = VersionPolicy.parse(version_policy)
        self._loader = loader
        self._events: ModelEvents = events if events is not None else _NoEvents()
        self._poll_interval_s = poll_interval_s
        self._serving: dict[str, _ServingSet] = {}
        self._disk = _DiskView()
        self._failures: dict[tuple[str, int], _Failure] = {}
        self._unloaded: set[str] = set()
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every model the policy selects, then start the poller (if the interval > 0)."""
        await self.refresh()
        self._started = True
        if self._poll_interval_s > 0 and self._poller is None:
            self._poller = asyncio.create_task(self._poll(), name="model-repository-poller")

    async def stop(self) -> None:
        """Stop polling and drain every batcher (requests in flight finish)."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        async with self._lock:
            for serving in self._serving.values():
                for handle in serving.versions.values():
                    self._retire(handle)
            self._serving.clear()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        self._started = False

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self.refresh()
            except Exception:  # a poll must never kill the poller; the next one tries again
                logger.exception("model repository poll failed")

    # -- the request path ----------------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None) -> ModelHandle:
        """The handle of ``version`` (default: the newest served); ModelNotFound/ModelNotReady."""
        serving = self._serving.get(name)
        if serving is not None:
            handle = serving.default if version is None else serving.versions.get(version)
            if handle is not None:
                return handle
        raise self._not_serving(name, version)

    def _not_serving(self, name: str, version: int | None) -> ModelNotFound | ModelNotReady:
        on_disk = self._disk.versions.get(name)
        if on_disk is None and name not in self._serving:
            return ModelNotFound(f"unknown model {name!r}", model=name)
        if name in self._unloaded:
            return ModelNotReady(f"model {name!r} is unloaded", model=name)
        if version is None:
            reasons = self._failure_reasons(name)
            why = f": {reasons}" if reasons else " yet"
            return ModelNotReady(f"model {name!r} has no loaded version{why}", model=name)
        if version not in (on_disk or {}):
            return ModelNotFound(
                f"model {name!r} has no version {version}", model=name, version=version
            )
        failure = self._failures.get((name, version))
        if failure is not None:
            return ModelNotReady(
                f"version {version} of model {name!r} failed to load: {failure.reason}",
                model=name,
                version=version,
            )
        served = sorted(self._serving.get(name, _EMPTY).versions)
        return ModelNotFound(
            f"version {version} of model {name!r} is not served (version policy {self.policy} "
            f"serves {served})",
            model=name,
            version=version,
        )

    def _failure_reasons(self, name: str) -> str:
        return "; ".join(f.reason for (n, _), f in sorted(self._failures.items()) if n == name)

    # -- model control -------------------------------------------------------------------------

    async def refresh(self, names: Sequence[str] | None = None) -> None:
        """Rescan the repository and bring the serving sets in line with disk and policy."""
        async with self._lock:
            await self._refresh_locked(names)

    async def _refresh_locked(self, names: Sequence[str] | None) -> None:
        disk = await asyncio.to_thread(_scan, self.repository)
        self._disk = disk
        for name in list(self._serving):
            if name not in disk.versions and (names is None or name in names):
                logger.warning("model %s disappeared from the repository; unloading it", name)
                self._publish(name, {})
                del self._serving[name]
        for name, versions in disk.versions.items():
            if (names is None or name in names) and name not in self._unloaded:
                await self._refresh_model(name, versions)

    async def _refresh_model(self, name: str, on_disk: Mapping[int, Signature]) -> None:
        current = self._serving.get(name, _EMPTY).versions
        selected: dict[int, ModelHandle] = {}
        for version in sorted(on_disk, reverse=True):
            if self.policy.latest is not None and len(selected) >= self.policy.latest:
                break
            if version in current:
                kept = selected[version] = current[version]
                # Recalibrated conformal scores published beside a serving bundle are picked up
                # by the same poll, in every worker (docs/architecture.md, "Monitoring").
                if kept.runtime is not None and await asyncio.to_thread(
                    kept.runtime.refresh_conformal
                ):
                    self._events.conformal_adopted(kept, kept.runtime.conformal.current[1])
                continue
            signature = on_disk[version]
            failure = self._failures.get((name, version))
            if failure is not None and failure.signature == signature:
                continue  # refused before and unchanged since: do not log it again every poll
            path = bundle_path(self.repository, name, version)
            try:
                handle = await asyncio.to_thread(self._loader, path, name, version)
            except ModelLoadError as exc:
                self._refuse(name, version, signature, exc.message)
                logger.error("refused model %s version %s: %s", name, version, exc.message)
                continue
            except Exception as exc:  # one odd bundle must not stop the others from serving
                # The reason is public (index, readiness): the type only, never a path.
                reason = f"the bundle could not be loaded ({type(exc).__name__})"
                self._refuse(name, version, signature, reason)
                logger.exception("refused model %s version %s", name, version)
                continue
            self._failures.pop((name, version), None)
            selected[version] = handle
            self._events.model_loaded(handle)
        if selected.keys() != current.keys():
            self._publish(name, selected)

    def _refuse(self, name: str, version: int, signature: Signature, reason: str) -> None:
        self._failures[(name, version)] = _Failure(signature, reason)
        self._events.model_refused(name, version, reason)

    def _publish(self, name: str, versions: dict[int, ModelHandle]) -> None:
        old = self._serving.get(name, _EMPTY).versions
        default = versions[max(versions)] if versions else None
        # One assignment: resolve() sees the old set or the new one, never a mixture.
        self._serving[name] = _ServingSet(versions, default)
        logger.info("model %s now serves versions %s (was %s)", name, sorted(versions), sorted(old))
        for version, handle in old.items():
            if version not in versions:
                self._retire(handle)

    def _retire(self, handle: ModelHandle) -> None:
        self._events.model_unloaded(handle.name, handle.version)
        if handle.runtime is None:
            return
        # Drain in the background: queued and running batches finish on this version.
        task = asyncio.get_running_loop().create_task(handle.runtime.close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def load(self, name: str) -> None:
        """Load (or reload) ``name`` now, retrying refused versions; Triton's load call.

        Raises ModelNotFound when the repository has no such model directory, and
        ModelLoadError when a version the policy selects was refused (the versions that were
        serving keep serving; the message names them).
        """
        async with self._lock:
            self._unloaded.discard(name)
            for key in [k for k in self._failures if k[0] == name]:
                del self._failures[key]
            await self._refresh_locked([name])
            if name not in self._disk.versions:
                raise ModelNotFound(f"unknown model {name!r}", model=name)
            wanted = sorted(self._disk.versions[name], reverse=True)
            if self.policy.latest is not None:
                wanted = wanted[: self.policy.latest]
            refused = [v for v in wanted if (name, v) in self._failures]
            if refused:
                served = sorted(self._serving.get(name, _EMPTY).versions)
                reasons = "; ".join(self._failures[(name, v)].reason for v in refused)
                raise ModelLoadError(
                    f"model {name!r}: {reasons}; serving versions {served}",
                    model=name,
                    refused=refused,
                    serving=served,
                )
            if not wanted:
                raise ModelLoadError(
                    f"model {name!r} has no versions in the repository", model=name
                )

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` (drained) until the next load call."""
        async with self._lock:
            if name not in self._serving and name not in self._disk.versions:
                raise ModelNotFound(f"unknown model {name!r}", model=name)
            self._unloaded.add(name)
            self._publish(name, {})
            del self._serving[name]

    # -- status --------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Every model known on disk or serving, sorted."""
        return sorted(set(self._disk.versions) | set(self._serving))

    def served_versions(self, name: str) -> list[int]:
        """Versions of ``name`` that serve now, ascending."""
        return sorted(self._serving.get(name, _EMPTY).versions)

    def index(self) -> list[IndexEntry]:
        """Every model version on disk with its state and, when unavailable, the reason."""
        rows: list[IndexEntry] = []
        for name in self.model_names():
            serving = self._serving.get(name, _EMPTY).versions
            versions = sorted(set(self._disk.versions.get(name, {})) | set(serving))
            if not versions:
                rows.append(IndexEntry(name, None, ModelState.UNAVAILABLE, "no versions on disk"))
            for version in versions:
                if version in serving:
                    rows.append(IndexEntry(name, version, ModelState.READY))
                    continue
                failure = self._failures.get((name, version))
                if name in self._unloaded:
                    reason = "unloaded"
                elif failure is not None:
                    reason = failure.reason
                else:
                    reason = f"not selected by version policy {self.policy}"
                rows.append(IndexEntry(name, version, ModelState.UNAVAILABLE, reason))
        return rows

    def ready(self, mode: Readiness = "all") -> bool:
        """Started, and ready under ``mode`` (service/readiness.py: every model, or any)."""
        return self._started and is_ready(self.index(), mode)


def _scan(repository: Path) -> _DiskView:
    view = _DiskView()
    for name in model_names(repository):
        versions: dict[int, Signature] = {}
        for version in model_versions(repository, name):
            versions[version] = _signature(bundle_path(repository, name, version))
        view.versions[name] = versions
    return view


def _signature(bundle: Path) -> Signature:
    parts: list[int] = []
    for file in (MANIFEST_FILE, MODEL_FILE):
        try:
            stat = (bundle / file).stat()
        except OSError:
            parts.extend((-1, -1))
        else:
            parts.extend((stat.st_mtime_ns, stat.st_size))
    return tuple(parts)
