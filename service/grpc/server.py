"""The gRPC server of one process: ``grpc.aio`` on the HTTP app's event loop (uvloop included).

Started by the HTTP app's lifespan after the composition root's ``start()`` and stopped, with
``graceful_shutdown_s`` of grace for calls in flight, before its ``stop()``: one SIGTERM drains
both fronts. Its limits are the HTTP front's settings (docs/architecture.md, "Request path").
"""

from __future__ import annotations

import logging

import grpc

from service.errors import UsageError
from service.grpc.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from service.grpc.servicer import InferenceServicer
from service.server import Server
from service.settings import Settings

logger = logging.getLogger("probserve.grpc")

#: Concurrent streams one HTTP/2 connection may hold open: a client that opens streams and
#: never finishes them ties up this many calls per connection, not an unbounded number.
MAX_STREAMS_PER_CONNECTION = 100


def channel_options(settings: Settings) -> list[tuple[str, int]]:
    """Core options: the HTTP front's size limits, bounded streams, and SO_REUSEPORT only when
    ``--workers`` processes must share the port (one process alone never shares it silently)."""
    return [
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", -1),
        # Soft and hard limit alike: between the two, gRPC refuses at random.
        ("grpc.max_metadata_size", settings.max_header_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_header_bytes),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        # Connections as max_connections bounds HTTP: with the streams bound, what clients that
        # never finish a call can hold is bounded (a few KB each).
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        # A connection must finish its HTTP/2 handshake as fast as HTTP clients their headers.
        ("grpc.server_handshake_timeout_ms", int(settings.header_timeout_s * 1000)),
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]


async def start_grpc(server: Server) -> grpc.aio.Server:
    """Serve ``GRPCInferenceService`` on ``settings.host:settings.grpc_port``."""
    settings = server.settings
    # No maximum_concurrent_rpcs: gRPC counts a call from its headers on, so clients that send
    # headers and never the message would use up the cap and lock every good call out. The
    # work itself is bounded where it queues (max_queued_rows: 503 UNAVAILABLE at once).
    front = grpc.aio.server(options=channel_options(settings))
    add_GRPCInferenceServiceServicer_to_server(InferenceServicer(server), front)
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        front.add_insecure_port(address)
    except RuntimeError:
        raise UsageError(
            f"the gRPC server could not bind {address}: pick another --grpc-port (0 turns "
            "gRPC off) or stop what holds it"
        ) from None
    await front.start()
    logger.info("gRPC (Open Inference Protocol) on %s", address)
    return front


async def stop_grpc(front: grpc.aio.Server, grace_s: float) -> None:
    """Refuse new calls; let those in flight finish for up to ``grace_s`` seconds."""
    await front.stop(grace_s)
