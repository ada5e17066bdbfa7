"""A gRPC load generator for `probserve bench`: what wrk is for HTTP, for ``ModelInfer``.

Closed loop like wrk: each connection (its own channel, so its own HTTP/2 connection) keeps one
call in flight for the run's duration. The request is serialized once and sent as bytes, and
answers are not parsed, so the client spends its core on the calls. Connections are shared out
among worker processes (``python -m bench.harness.grpc_load``), all pinned to the load core.
The messages are ``tritonclient.grpc``'s: the same wire format every contender serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.wrk import LoadResult, pinned
from service.codecs.v2 import serialize_bytes

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
_MARK = "PROBSERVE_GRPC "


def infer_request(v2_body: dict[str, Any], model: str) -> bytes:
    """A V2 REST request body as the serialized ``ModelInferRequest`` tritonclient would send:
    every tensor in ``raw_input_contents``, the confidence level as a double parameter."""
    from tritonclient.grpc import service_pb2  # the client's messages, never probserve's

    request = service_pb2.ModelInferRequest(model_name=model, id=v2_body.get("id", ""))
    for name, value in v2_body.get("parameters", {}).items():
        request.parameters[name].double_param = float(value)
    for tensor in v2_body["inputs"]:
        request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        data = tensor["data"]
        raw = (
            serialize_bytes(data)
            if tensor["datatype"] == "BYTES"
            else np.asarray(data, dtype="<f4").tobytes()
        )
        request.raw_input_contents.append(raw)
    serialized: bytes = request.SerializeToString()
    return serialized


async def _drive(target: str, request: bytes, connections: int, seconds: float) -> dict[str, Any]:
    import grpc

    channels = [
        # A local subchannel pool per channel: one TCP connection each, as wrk's connections.
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 30)
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def loop(channel: grpc.aio.Channel) -> None:
        nonlocal errors
        # No serializers: the request goes as bytes, the answer comes back unparsed.
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(MODEL_INFER)
        while (start := time.perf_counter()) < stop:
            try:
                await call(request, timeout=10)
            except grpc.RpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(loop(channel) for channel in channels))
    elapsed = time.perf_counter() - began
    for channel in channels:
        await channel.close()
    return {"latencies": latencies, "errors": errors, "seconds": elapsed}


def run_grpc_load(
    target: str,
    request: bytes,
    *,
    connections: int,
    seconds: float,
    core: int | None,
    processes: int = 2,
) -> LoadResult:
    """``connections`` closed-loop callers of ``ModelInfer`` on ``target`` for ``seconds``."""
    shares = [connections // processes + (k < connections % processes) for k in range(processes)]
    with tempfile.TemporaryDirectory(prefix="probserve-grpc-load-") as tmp:
        body = Path(tmp) / "request.bin"
        body.write_bytes(request)
        command = [sys.executable, "-m", "bench.harness.grpc_load", target, str(body)]
        workers = [
            subprocess.Popen(
                pinned([*command, str(share), str(seconds)], core),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for share in shares
            if share
        ]
        outputs = [w.communicate(timeout=seconds + 120) for w in workers]
    latencies: list[float] = []
    errors, elapsed = 0, 0.0
    for (out, err), worker in zip(outputs, workers, strict=True):
        line = next((x for x in out.splitlines() if x.startswith(_MARK)), None)
        if line is None:
            raise RuntimeError(f"gRPC load worker exited {worker.returncode}: {err.strip()}")
        part = json.loads(line[len(_MARK) :])
        latencies += part["latencies"]
        errors += part["errors"]
        elapsed = max(elapsed, part["seconds"])
    ms = np.percentile(np.asarray(latencies), [50, 99]) * 1e3 if latencies else [0.0, 0.0]
    return LoadResult(len(latencies), elapsed, float(ms[0]), float(ms[1]), errors)


def main() -> None:
    """One worker: ``TARGET REQUEST_FILE CONNECTIONS SECONDS``; prints its summary line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target")
    parser.add_argument("request", type=Path)
    parser.add_argument("connections", type=int)
    parser.add_argument("seconds", type=float)
    args = parser.parse_args()
    summary = asyncio.run(
        _drive(args.target, args.request.read_bytes(), args.connections, args.seconds)
    )
    print(_MARK + json.dumps(summary))


if __name__ == "__main__":
    main()
