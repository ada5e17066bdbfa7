"""``GRPCInferenceService``: each RPC a few lines over the composition root.

Inference goes through ``server.pipeline.run`` with the gRPC codec, so it is decoded, limited,
batched, logged and counted as the REST protocols are; metadata reuses the V2 REST content
(``model_metadata``); model control takes the admin token from the ``authorization`` metadata.
Every failure ends the call with the status of :mod:`service.grpc.status`, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc

from service.codecs.v2 import model_metadata
from service.errors import ModelNotReady, ProbserveError, internal_error
from service.grpc import grpc_predict_v2_pb2 as pb
from service.grpc.codec import GRPC
from service.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceServicer
from service.grpc.status import GrpcError, grpc_error
from service.pipeline import parse_version
from service.request_ids import request_id_from_headers
from service.server import Server
from service.types import ModelState
from service.version import __version__

T = TypeVar("T")
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _metadata(context: Context, key: str) -> str | None:
    """One invocation metadata value (keys arrive lower-case)."""
    for k, value in context.invocation_metadata() or ():
        if k == key:
            return value if isinstance(value, str) else None
    return None


async def _end(context: Context, error: GrpcError) -> None:
    await context.abort(error.code, error.message, trailing_metadata=error.trailers)


class InferenceServicer(GRPCInferenceServiceServicer):
    """The Open Inference Protocol's gRPC service plus Triton's repository RPCs."""

    def __init__(self, server: Server) -> None:
        """Serve ``server``'s pipeline and registry."""
        self.server = server

    async def _answer(self, context: Context, answer: Callable[[], Awaitable[T]]) -> T:
        """``answer()``, or the call ended with the status of the error it raised."""
        try:
            return await answer()
        except ProbserveError as exc:
            request_id = request_id_from_headers(_metadata(context, "x-request-id"))
            await _end(context, grpc_error(exc, request_id))
        except Exception as exc:  # a bug: the log has the traceback, the caller a request id
            request_id = request_id_from_headers(_metadata(context, "x-request-id"))
            err = internal_error(exc, request_id, f"grpc {type(self).__name__}")
            await _end(context, grpc_error(err, request_id))
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        """Live while the process answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        """Ready under the ``readiness`` setting, as /v2/health/ready."""
        return pb.ServerReadyResponse(ready=self.server.ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        """Whether the model (version) serves; an unknown model is NOT_FOUND."""

        async def answer() -> pb.ModelReadyResponse:
            try:
                self.server.pipeline.resolve(
                    request.name, parse_version(request.name, request.version)
                )
            except ModelNotReady:
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=True)

        return await self._answer(context, answer)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        """Name, version and the model repository extension."""
        return pb.ServerMetadataResponse(
            name="probserve", version=__version__, extensions=["model_repository"]
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        """The V2 REST metadata of the model (version): its inputs and outputs."""

        async def answer() -> pb.ModelMetadataResponse:
            name = request.name
            handle = self.server.pipeline.resolve(name, parse_version(name, request.version))
            meta = model_metadata(handle, self.server.registry.served_versions(name))
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=meta["inputs"],
                outputs=meta["outputs"],
            )

        return await self._answer(context, answer)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        """One inference through the request pipeline."""
        run = self.server.pipeline.run(
            GRPC,
            request.model_name,
            request.model_version or None,
            request,
            _metadata(context, "x-request-id"),
        )
        # Counted among the requests the server holds, as HTTP counts its own: the batcher's
        # idle fast path runs a lone request at once and lets concurrent ones batch.
        held = self.server.connections
        held.active += 1
        try:
            # Shielded: a caller that leaves (deadline, cancel) does not cut the pipeline
            # short, so its request is still counted once and the batcher finishes it.
            reply = await asyncio.shield(run)
        finally:
            held.active -= 1
        if isinstance(reply, GrpcError):
            await _end(context, reply)
        assert isinstance(reply, pb.ModelInferResponse)
        return reply

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        """Every model version on disk with its state (admin token)."""

        async def answer() -> pb.RepositoryIndexResponse:
            self.server.authorize(_metadata(context, "authorization"))
            rows = self.server.models().index()
            response = pb.RepositoryIndexResponse()
            for row in rows:
                if request.ready and row.state is not ModelState.READY:
                    continue
                response.models.add(**row.as_triton())
            return response

        return await self._answer(context, answer)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        """Load or reload a model, verified and warmed up (admin token)."""

        async def answer() -> pb.RepositoryModelLoadResponse:
            self.server.authorize(_metadata(context, "authorization"))
            await self.server.models().load(request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await self._answer(context, answer)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        """Stop serving a model, drained (admin token)."""

        async def answer() -> pb.RepositoryModelUnloadResponse:
            self.server.authorize(_metadata(context, "authorization"))
            await self.server.models().unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._answer(context, answer)
