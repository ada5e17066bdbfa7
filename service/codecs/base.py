"""The codec interface: what every protocol adapter gives the request pipeline.

A codec turns a protocol's payload into the one request type (:class:`InferenceRequest`) and a
computed :class:`Prediction` or a domain error into the protocol's reply; the pipeline
(``service.pipeline``) does everything between, once, for every protocol. MLServer's
``codecs/base.py`` and KServe's ``InferRequest`` are the same idea.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from service.bundle import Manifest
from service.errors import ProbserveError
from service.types import InferenceRequest

P_contra = TypeVar("P_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What every decode is held to."""

    max_rows: int
    default_level: float


class Codec(Protocol[P_contra, T_contra, R_co]):
    """One protocol's decode, and encode of what the pipeline computed (a ``Prediction``, or
    an ``Explanation`` for an explain codec); ``protocol`` labels metrics and log rows."""

    @property
    def protocol(self) -> str:
        """ "v1", "v2" or "grpc"."""

    @property
    def endpoint(self) -> str:
        """The telemetry endpoint label of its requests."""

    def decode(
        self, payload: P_contra, manifest: Manifest, limits: DecodeLimits
    ) -> InferenceRequest:
        """Validate ``payload`` against the model; InvalidInput names what was wrong and where."""

    def encode(self, computed: T_contra) -> R_co:
        """The successful reply."""

    def error(self, exc: ProbserveError, request_id: str) -> R_co:
        """The reply for a domain error."""
