"""Execution provider resolution: auto, explicit lists, and no silent fallback from CUDA."""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort
import pytest

from service.bundle.columns import graph_columns
from service.errors import ModelLoadError
from service.runtime import (
    CPU,
    CUDA,
    ExecutionProviders,
    ProviderError,
    cuda_device_usable,
    cuda_provider_options,
    load_model,
    resolve_providers,
    session_options,
)
from service.runtime.providers import parse_provider_spec
from tests.service.conftest import BundleFactory

NO_GPU_REASON = "no CUDA device / onnxruntime-gpu not installed"


def test_auto_picks_cuda_only_when_a_device_is_usable() -> None:
    resolved = resolve_providers("auto")
    assert not resolved.explicit
    if cuda_device_usable():
        assert resolved.providers == (CUDA, CPU)
    else:
        assert resolved.providers == (CPU,)
    assert resolved.providers[-1] == CPU


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cpu", [CPU]),
        ("CPU", [CPU]),
        (" cuda , cpu ", [CUDA, CPU]),
        ("CPUExecutionProvider", [CPU]),
        (["cuda", "cpu", "cpu"], [CUDA, CPU]),
    ],
)
def test_explicit_lists_parse_to_onnxruntime_names(
    spec: str | list[str], expected: list[str]
) -> None:
    assert parse_provider_spec(spec) == (expected, True)


@pytest.mark.parametrize("spec", ["tpu", "auto,cpu", "cuda,openvino"])
def test_unknown_or_mixed_specs_are_usage_errors(spec: str) -> None:
    with pytest.raises(ProviderError, match="auto"):
        resolve_providers(spec)


def test_explicit_cpu_runs_on_cpu(bundle_factory: BundleFactory) -> None:
    model = load_model(bundle_factory("toy"), providers=resolve_providers("cpu"))
    assert model.provider == CPU
    assert model.session.get_providers() == [CPU]


def test_explicit_cuda_without_a_device_is_a_clear_error() -> None:
    """Asking for CUDA where it cannot run fails loudly instead of quietly running on CPU."""
    if cuda_device_usable():
        pytest.skip("a CUDA device is usable here, so explicit cuda is not an error")
    for spec in ("cuda", "cuda,cpu"):
        with pytest.raises(ProviderError) as info:
            resolve_providers(spec)
        message = info.value.message
        assert CUDA in message
        assert "onnxruntime-gpu" in message
        assert info.value.status_code == 400  # a usage error: `probserve serve` exits with 2


def test_cuda_options_are_deliberate() -> None:
    options = cuda_provider_options(device_id=1)
    assert options == {
        "device_id": "1",
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "HEURISTIC",
        "do_copy_in_default_stream": "1",
    }


def test_session_options_keep_threads_small() -> None:
    options = session_options(intra_op_threads=2)
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with pytest.raises(ValueError, match="intra_op_threads"):
        session_options(intra_op_threads=0)


@pytest.mark.gpu
def test_bundle_runs_on_cuda_where_a_device_exists(bundle_factory: BundleFactory) -> None:
    """Runs a real bundle on CUDAExecutionProvider and compares it with the stored CPU outputs.

    Skips with "no CUDA device / onnxruntime-gpu not installed" where onnxruntime cannot start a
    CUDA session. This skip is allowed even under PROBSERVE_STRICT_TESTS=1: CI machines never have
    a GPU, and the test exists for the machines that do.
    """
    if not cuda_device_usable():
        pytest.skip(NO_GPU_REASON)
    from service.server import Server
    from service.settings import Settings
    from service.types import FeatureBatch, InferenceRequest

    bundle = bundle_factory("toy")
    model = load_model(bundle, providers=resolve_providers("cuda"))
    assert model.provider == CUDA
    columns = graph_columns(model.manifest.features, model.manifest.sample.inputs)
    np.testing.assert_allclose(model.run(columns), model.manifest.sample.outputs, atol=1e-4)

    async def through_the_pipeline() -> str:
        settings = Settings(
            model_repository=bundle.parent.parent, providers="auto", prediction_log_url="none"
        )
        server = Server(settings)
        await server.start()
        try:
            handle = server.pipeline.resolve("toy")
            request = InferenceRequest(FeatureBatch(columns, 4), 0.9)
            result = await server.pipeline.predict(handle, request, "r", "v1", 0.0)
            assert np.allclose(result.uncertainty.probabilities.sum(axis=1), 1.0)
            return handle.provider
        finally:
            await server.stop()

    assert asyncio.run(through_the_pipeline()) == CUDA


def _cuda_then_cpu(*, explicit: bool) -> ExecutionProviders:
    return ExecutionProviders((CUDA, CPU), (cuda_provider_options(), {}), explicit)


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_a_session_that_falls_back_from_explicit_cuda_is_refused(
    bundle_factory: BundleFactory,
) -> None:
    """The last line of defence: onnxruntime quietly built the session on CPU; we refuse it."""
    if cuda_device_usable():
        pytest.skip("a CUDA device is usable here, so the session does not fall back")
    with pytest.raises(ModelLoadError) as info:
        load_model(bundle_factory("toy"), providers=_cuda_then_cpu(explicit=True))
    assert info.value.details["check"] == "provider"
    assert f"{CUDA} was requested" in info.value.message


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_auto_serves_on_what_the_session_really_got(bundle_factory: BundleFactory) -> None:
    if cuda_device_usable():
        pytest.skip("a CUDA device is usable here, so the session does not fall back")
    model = load_model(bundle_factory("toy"), providers=_cuda_then_cpu(explicit=False))
    assert model.provider == CPU  # metadata reports the real provider, not the wish


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_gpu_package_without_a_device_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu lists CUDA even with no device; the probe must see through that.

    The one injected fault: this machine's onnxruntime is made to *list* CUDA, as the GPU
    package does; the probe session it then creates is real and really falls back to CPU.
    """
    if cuda_device_usable():
        pytest.skip("a CUDA device is usable here")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    cuda_device_usable.cache_clear()
    try:
        assert not cuda_device_usable()
        assert resolve_providers("auto").providers == (CPU,)
        with pytest.raises(ProviderError, match="no session starts on CUDA device 0"):
            resolve_providers("cuda")
    finally:
        cuda_device_usable.cache_clear()
