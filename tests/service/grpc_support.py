"""Helpers of the gRPC tests: a real server with gRPC on, stock-client inputs, raw HTTP/2.

Only ``tritonclient.grpc``'s messages are used in the test process: probserve's generated ones
claim the same protobuf package and cannot be imported beside them (service/grpc/__init__.py).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton_grpc

from tests.service.conftest import LiveServer, start_live_server
from tests.support import free_port

#: The one method every probe targets.
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class GrpcServer:
    """A real ``probserve serve`` with its gRPC front on ``address`` (``host:port``)."""

    live: LiveServer
    address: str

    @property
    def url(self) -> str:
        """The HTTP front's base URL."""
        return self.live.url

    def client(self) -> triton_grpc.InferenceServerClient:
        """The stock gRPC client."""
        return triton_grpc.InferenceServerClient(self.address)

    def stop(self) -> int:
        """SIGTERM, then wait; the exit code."""
        return self.live.stop()


def start_grpc_server(repository: Path, log: Path, *args: str, **env: str) -> GrpcServer:
    """Start a real server with gRPC on a free port; ``args`` are more ``serve`` flags."""
    port = free_port()
    live = start_live_server(repository, log, "--grpc-port", str(port), *args, **env)
    return GrpcServer(live, f"127.0.0.1:{port}")


#: Three rows of the test features (tests/service/conftest.py): a NaN, an empty and an unknown
#: category among them.
X1 = np.array([[0.5], [np.nan], [-1.0]], dtype=np.float32)
X2 = np.array([[4.0], [6.0], [5.0]], dtype=np.float32)
COLOUR = np.array([["red"], [""], ["purple"]], dtype=object)


def grpc_inputs(
    x1: np.ndarray = X1, x2: np.ndarray = X2, colour: np.ndarray = COLOUR
) -> list[triton_grpc.InferInput]:
    """The stock client's inputs (raw_input_contents) for the three test features."""
    inputs = []
    for name, array in (("x1", x1), ("x2", x2), ("colour", colour)):
        datatype = "BYTES" if array.dtype == object else "FP32"
        tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


# -- raw HTTP/2, for clients that never finish a call ---------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame: 24-bit length, type, flags, stream id."""
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def _literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing, plain (no Huffman) strings < 127 bytes."""
    raw_name, raw_value = name.encode(), value.encode()
    return b"\x00" + bytes([len(raw_name)]) + raw_name + bytes([len(raw_value)]) + raw_value


def stalled_call(stream: int, authority: str) -> bytes:
    """HEADERS of a ModelInfer call, then the first 10 bytes of a 1000-byte message; no end."""
    block = b"".join(
        _literal(k, v)
        for k, v in (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", MODEL_INFER),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
    )
    headers = frame(0x1, 0x4, stream, block)  # END_HEADERS, not END_STREAM
    data = frame(0x0, 0x0, stream, b"\x00" + struct.pack(">I", 1000) + b"\x01" * 10)
    return headers + data


def open_stalled_connection(address: str, streams: int) -> socket.socket:
    """A connection holding ``streams`` calls that sent half a message each and then stall."""
    host, port = address.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)), timeout=5)
    conn.sendall(PREFACE + frame(0x4, 0x0, 0) + frame(0x4, 0x1, 0))  # SETTINGS, and an ACK
    conn.sendall(b"".join(stalled_call(1 + 2 * k, address) for k in range(streams)))
    return conn
