"""ONNX Runtime execution providers and session options.

``auto`` picks CUDA only when onnxruntime-gpu is installed AND a session can actually be created on
a device; an explicit ``cuda`` that cannot be honoured is an error, never a silent CPU fallback,
because someone who asked for a GPU and silently got a CPU finds out from a latency graph.
"""

from __future__ import annotations

import base64
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import onnxruntime as ort

from service.errors import UsageError
from service.provider_names import CPU as CPU
from service.provider_names import CUDA as CUDA
from service.provider_names import parse_provider_names

logger = logging.getLogger(__name__)

#: A one-node float graph (Relu on [1]), used to ask onnxruntime whether a CUDA session really
#: starts (driver, device, CUDA and cuDNN libraries) without depending on the ``onnx`` package.
_PROBE_MODEL = base64.b64decode(
    "CAg6NwoMCgF4EgF5IgRSZWx1EgVwcm9iZVoPCgF4EgoKCAgBEgQKAggBYg8KAXkSCgoICAESBAoCCAFCBAoAEBE="
)


class ProviderError(UsageError):
    """The requested execution providers cannot be used on this machine (exit code 2)."""

    error_type = "provider_error"


@dataclass(frozen=True)
class ExecutionProviders:
    """Resolved providers, in priority order, with their options (what InferenceSession takes)."""

    providers: tuple[str, ...]
    options: tuple[dict[str, str], ...]
    #: True when the user named the providers; then a session that did not get the first one
    #: is refused instead of running on whatever onnxruntime fell back to.
    explicit: bool
    requested: str = field(default="auto")

    @property
    def primary(self) -> str:
        """The provider that should run the graph (the first one)."""
        return self.providers[0]


def cuda_provider_options(device_id: int = 0) -> dict[str, str]:
    """CUDA provider options, each chosen deliberately (onnxruntime takes them as strings)."""
    return {
        # One service process per GPU is the deployment shape (one pod, one device); the pod's
        # CUDA_VISIBLE_DEVICES picks the physical card, so the default index is 0.
        "device_id": str(device_id),
        # The default kNextPowerOfTwo arena doubles on every growth; with a different batch
        # size on every call that reserves up to twice the memory actually used. Our graphs are
        # small, so asking for exactly what is needed costs nothing and keeps memory predictable
        # when several models share one card.
        "arena_extend_strategy": "kSameAsRequested",
        # EXHAUSTIVE benchmarks every cuDNN algorithm for each new input shape; with dynamic
        # batching every new batch size would be a multi-millisecond latency spike. The graph is
        # MLP matmuls (no convolutions), so the heuristic choice loses nothing.
        "cudnn_conv_algo_search": "HEURISTIC",
        # Copies on the compute stream: no cross-stream synchronisation to get wrong, and with
        # one inference at a time per model a separate copy stream would overlap nothing.
        "do_copy_in_default_stream": "1",
    }


def parse_provider_spec(spec: str | Sequence[str]) -> tuple[list[str], bool]:
    """``"auto"``, ``"cpu"``, ``"cuda,cpu"`` or full ORT names -> (names, explicit)."""
    try:
        return parse_provider_names(spec)
    except ValueError as exc:
        raise ProviderError(str(exc)) from None


@lru_cache(maxsize=8)
def cuda_device_usable(device_id: int = 0) -> bool:
    """True when onnxruntime lists CUDA and a session really starts on ``device_id``.

    onnxruntime-gpu lists CUDAExecutionProvider whenever the package is installed, also on a
    machine without a driver or device; creating a session is the only reliable test, because
    onnxruntime falls back to CPU (and says so only in a log line) when CUDA fails to start.
    """
    if CUDA not in ort.get_available_providers():
        return False
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4  # the probe's failure is an answer, not an error to log
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session = ort.InferenceSession(
                _PROBE_MODEL,
                options,
                providers=[CUDA],
                provider_options=[cuda_provider_options(device_id)],
            )
    except Exception as exc:  # any failure to start means "not usable", whatever its type
        logger.info("CUDA execution provider is installed but unusable: %s", exc)
        return False
    return CUDA in session.get_providers()


def resolve_providers(
    spec: str | Sequence[str] = "auto", *, device_id: int = 0
) -> ExecutionProviders:
    """Resolve a provider spec to what this machine can run; explicit requests are checked.

    ``auto`` -> CUDA then CPU when :func:`cuda_device_usable`, else CPU alone. An explicit list
    must be fully available: ``cuda`` without onnxruntime-gpu or a device raises
    :class:`ProviderError` naming what is missing.
    """
    requested = spec if isinstance(spec, str) else ",".join(spec)
    names, explicit = parse_provider_spec(spec)
    if not explicit:
        names = [CUDA, CPU] if cuda_device_usable(device_id) else [CPU]
    available = ort.get_available_providers()
    for name in names:
        if name not in available:
            hint = " (install the gpu extra: onnxruntime-gpu)" if name == CUDA else ""
            raise ProviderError(
                f"execution provider {name} was requested ({requested!r}) but this onnxruntime "
                f"build offers only {', '.join(available)}{hint}"
            )
    if CUDA in names and explicit and not cuda_device_usable(device_id):
        raise ProviderError(
            f"execution provider {CUDA} was requested ({requested!r}) and onnxruntime-gpu is "
            f"installed, but no session starts on CUDA device {device_id}: check the driver, "
            "CUDA_VISIBLE_DEVICES and the CUDA/cuDNN libraries (or ask for cpu)"
        )
    options = tuple(cuda_provider_options(device_id) if n == CUDA else {} for n in names)
    resolved = ExecutionProviders(tuple(names), options, explicit, requested)
    logger.info("execution providers %s resolved to %s", requested, ", ".join(names))
    return resolved


def session_options(*, intra_op_threads: int = 1) -> ort.SessionOptions:
    """Session options for serving: few threads, full graph optimisation, no busy spinning.

    The HTTP server and the batcher share the machine's cores with onnxruntime; our graphs are
    small MLPs, so one intra-op thread is the default and the batcher, not a big thread pool,
    provides throughput.
    """
    if intra_op_threads < 1:
        raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    # One graph, one path through it: a parallel executor would only add a thread to hand off to.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers burn the core the event loop needs between small inferences.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initialisers etc. are noise here
    return options


def session_provider_arguments(providers: ExecutionProviders) -> dict[str, Any]:
    """Keyword arguments for ``ort.InferenceSession`` (providers and their options)."""
    return {"providers": list(providers.providers), "provider_options": list(providers.options)}
