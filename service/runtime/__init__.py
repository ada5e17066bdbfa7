"""Model runtime: execution providers, bundle loading and verification (ONNX Runtime only)."""

from service.runtime.model import LoadedModel, load_model
from service.runtime.providers import (
    CPU,
    CUDA,
    ExecutionProviders,
    ProviderError,
    cuda_device_usable,
    cuda_provider_options,
    resolve_providers,
    session_options,
)

__all__ = [
    "CPU",
    "CUDA",
    "ExecutionProviders",
    "LoadedModel",
    "ProviderError",
    "cuda_device_usable",
    "cuda_provider_options",
    "load_model",
    "resolve_providers",
    "session_options",
]
