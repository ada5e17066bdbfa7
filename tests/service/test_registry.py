"""The model registry over a real repository: policy, errors, refusals and hot reload."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from service.bundle import bundle_path
from service.errors import ModelLoadError, ModelNotFound, ModelNotReady
from service.runtime import load_model
from service.types import ModelHandle, ModelState
from service.version_policy import VersionPolicy
from tests.service.conftest import BundleFactory, make_registry, write_test_bundle
from tests.service.support import corrupt, rows

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run one async scenario in a fresh event loop."""
    return asyncio.run(scenario())  # type: ignore[arg-type]


def publish_corrupt_version(repository: Path, name: str, tmp: Path, seed: int) -> Path:
    """Write a bundle elsewhere, corrupt it, then rename it in as the next version atomically."""
    staged = write_test_bundle(tmp / f"staging-{seed}", name, seed=seed)
    corrupt(staged)
    versions = sorted(int(p.name) for p in (repository / name).iterdir() if p.name.isdigit())
    target = repository / name / str(versions[-1] + 1)
    os.rename(staged, target)
    return target


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("spec", "latest"),
    [("latest", 1), ("latest:3", 3), ("LATEST:2", 2), (2, 2), ("all", None)],
)
def test_version_policy_parses(spec: str | int, latest: int | None) -> None:
    assert VersionPolicy.parse(spec).latest == latest


@pytest.mark.parametrize("spec", ["newest", "latest:0", "latest:-1", "some"])
def test_bad_version_policy_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="latest:N"):
        VersionPolicy.parse(spec)


@pytest.mark.parametrize(
    ("policy", "served"), [("latest", [3]), ("latest:2", [2, 3]), ("all", [1, 2, 3])]
)
def test_version_policy_selects_the_newest_versions(
    bundle_factory: BundleFactory, policy: str, served: list[int]
) -> None:
    for seed in range(3):
        repository = bundle_factory("toy", seed=seed).parent.parent

    async def scenario() -> None:
        registry = make_registry(repository, version_policy=policy)
        assert not registry.ready()
        await registry.start()
        try:
            assert registry.ready()
            assert registry.served_versions("toy") == served
            assert registry.resolve("toy").version == 3
            for version in served:
                handle = registry.resolve("toy", version)
                assert (handle.name, handle.version, handle.provider) == (
                    "toy",
                    version,
                    "CPUExecutionProvider",
                )
            for version in {1, 2, 3} - set(served):
                with pytest.raises(ModelNotFound, match="version policy"):
                    registry.resolve("toy", version)
            states = {e.version: e.state for e in registry.index()}
            assert states == {
                v: ModelState.READY if v in served else ModelState.UNAVAILABLE for v in (1, 2, 3)
            }
        finally:
            await registry.stop()

    run(scenario)


def test_unknown_model_and_version_are_not_found(bundle_repository: Path) -> None:
    async def scenario() -> None:
        registry = make_registry(bundle_repository)
        await registry.start()
        try:
            with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
                registry.resolve("nope")
            with pytest.raises(ModelNotFound, match="no version 9"):
                registry.resolve("toy", 9)
            with pytest.raises(ModelNotFound):
                await registry.load("nope")
            with pytest.raises(ModelNotFound):
                await registry.unload("nope")
        finally:
            await registry.stop()

    run(scenario)


def test_a_refused_bundle_is_skipped_and_the_rest_serve(bundle_factory: BundleFactory) -> None:
    repository = bundle_factory("good").parent.parent
    corrupt(bundle_factory("bad"))
    bundle_factory("mixed", seed=1)
    corrupt(bundle_factory("mixed", seed=2))  # newest version corrupt: version 1 serves

    async def scenario() -> None:
        registry = make_registry(repository)
        await registry.start()
        try:
            assert registry.resolve("good").version == 1
            assert registry.resolve("mixed").version == 1
            with pytest.raises(ModelNotReady, match="sha256"):
                registry.resolve("bad")
            with pytest.raises(ModelNotReady, match="sha256"):
                registry.resolve("mixed", 2)
            assert not registry.ready(), "a configured model without a loaded version"
            rows_ = {(e.name, e.version): e for e in registry.index()}
            assert rows_[("bad", 1)].state == ModelState.UNAVAILABLE
            assert "sha256" in rows_[("bad", 1)].reason
            assert rows_[("mixed", 2)].as_triton()["state"] == "UNAVAILABLE"
            assert rows_[("good", 1)].as_triton() == {
                "name": "good",
                "version": "1",
                "state": "READY",
                "reason": "",
            }
            await registry.unload("bad")  # an operator gives up on it: readiness comes back
            assert registry.ready()
        finally:
            await registry.stop()

    run(scenario)


def test_unload_and_load(bundle_factory: BundleFactory) -> None:
    repository = bundle_factory("toy").parent.parent
    bundle_factory("other")

    async def scenario() -> None:
        registry = make_registry(repository)
        await registry.start()
        try:
            await registry.unload("toy")
            with pytest.raises(ModelNotReady, match="unloaded"):
                registry.resolve("toy")
            assert registry.ready()  # unloaded on purpose: not expected to serve
            assert {e.reason for e in registry.index() if e.name == "toy"} == {"unloaded"}
            await registry.refresh()  # polling does not undo an explicit unload
            with pytest.raises(ModelNotReady):
                registry.resolve("toy")
            await registry.load("toy")
            assert registry.resolve("toy").version == 1
        finally:
            await registry.stop()

    run(scenario)


def test_hot_reload_swaps_in_a_new_version_and_refuses_a_corrupt_one(
    bundle_factory: BundleFactory, tmp_path: Path
) -> None:
    repository = bundle_factory("toy", seed=0).parent.parent

    async def scenario() -> None:
        registry = make_registry(repository, poll_interval_s=0.05)
        await registry.start()
        try:
            first = registry.resolve("toy")
            assert first.version == 1
            await asyncio.to_thread(bundle_factory, "toy", seed=1)
            await wait_for(lambda: registry.resolve("toy").version == 2)
            assert registry.served_versions("toy") == [2]
            # A corrupt version 3 appears: refused with its reason, version 2 keeps serving.
            bad = publish_corrupt_version(repository, "toy", tmp_path, seed=2)
            # Wait for the refusal itself: while version 3's load is still running the index
            # already lists it, as not selected by the version policy.
            await wait_for(
                lambda: any(e.version == 3 and "sha256" in e.reason for e in registry.index())
            )
            assert registry.resolve("toy").version == 2
            with pytest.raises(ModelNotReady, match="sha256"):
                registry.resolve("toy", 3)
            # An explicit load call reports the refusal and names what still serves.
            with pytest.raises(ModelLoadError, match=r"sha256.*serving versions \[2\]"):
                await registry.load("toy")
            assert registry.resolve("toy").version == 2
            # Fixing the files in place (new mtime and size) makes the poller try again.
            shutil.rmtree(bad)
            good = write_test_bundle(tmp_path / "staging-fixed", "toy", seed=3)
            os.rename(good, bad)
            await wait_for(lambda: registry.resolve("toy").version == 3)
            # A model that appears later is picked up too.
            assert "late" not in registry.model_names()
            await asyncio.to_thread(bundle_factory, "late", seed=4)
            await wait_for(lambda: registry.served_versions("late") == [1])
            assert registry.ready()
        finally:
            await registry.stop()

    run(scenario)


def test_requests_in_flight_finish_on_the_version_they_resolved(
    bundle_factory: BundleFactory,
) -> None:
    v1 = bundle_factory("toy", seed=0)
    repository = v1.parent.parent
    expected_v1 = load_model(v1)
    batch = rows(3, seed=11)

    async def scenario() -> tuple[ModelHandle, np.ndarray, ModelHandle, np.ndarray]:
        # A long queue delay keeps the first request waiting in version 1's batcher.
        registry = make_registry(repository, max_queue_delay_us=300_000)
        await registry.start()
        try:
            old = registry.resolve("toy")
            assert old.runtime is not None
            queued = asyncio.ensure_future(old.runtime.batcher.submit(batch))
            held = registry.resolve("toy")  # resolved now, submitted only after the swap
            await asyncio.sleep(0.01)
            await asyncio.to_thread(bundle_factory, "toy", seed=1)
            assert not queued.done(), "the request must still be queued when the swap happens"
            await registry.refresh()
            assert registry.resolve("toy").version == 2
            assert held.runtime is not None
            late = await held.runtime.batcher.submit(batch)
            return old, await queued, held, late
        finally:
            await registry.stop()

    old, queued_result, held, late_result = run(scenario)
    assert old.version == 1 and held.version == 1
    np.testing.assert_allclose(queued_result, expected_v1.run(batch.columns), atol=1e-6)
    np.testing.assert_allclose(late_result, expected_v1.run(batch.columns), atol=1e-6)
    v2 = load_model(bundle_path(repository, "toy", 2))
    assert not np.allclose(late_result, v2.run(batch.columns), atol=1e-3)


def test_nothing_serves_before_start(bundle_repository: Path) -> None:
    registry = make_registry(bundle_repository)
    assert not registry.ready()
    with pytest.raises(ModelNotFound):
        registry.resolve("toy")  # nothing scanned before start(): unknown, not a crash
