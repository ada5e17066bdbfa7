"""Model runtime: execution providers, bundle loading and verification, served versions."""

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
from service.runtime.serving import ServedVersion, Uncertainty, derive_uncertainty

__all__ = [
    "CPU",
    "CUDA",
    "ExecutionProviders",
    "LoadedModel",
    "ProviderError",
    "ServedVersion",
    "Uncertainty",
    "cuda_device_usable",
    "cuda_provider_options",
    "derive_uncertainty",
    "load_model",
    "resolve_providers",
    "session_options",
]
