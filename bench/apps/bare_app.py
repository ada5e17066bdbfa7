"""The HTTP floor: a bare ASGI app, orjson in and out, one ONNX Runtime call, no framework.

Standalone on purpose (onnxruntime, numpy and orjson only): it is what the lightest possible
Python server does per request, so `probserve bench` can say how far above that floor we are.
Run with ``uvicorn --app-dir bench/apps --factory bare_app:create_app`` and
``PROBSERVE_BENCH_ONNX=<model.onnx>`` (``PROBSERVE_BENCH_PROVIDERS=cuda``: on a GPU).
Body: ``{"instances": [{feature: value, ...}, ...]}``;
answer: ``{"predictions": [[p_class0, p_class1, ...], ...]}`` (mean over ensemble members).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _columns(inputs: list[tuple[str, bool]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One [N, 1] array per graph input: float32 (None -> NaN) or string (None -> "")."""
    columns: dict[str, Any] = {}
    for name, numeric in inputs:
        if numeric:
            values = [np.nan if (v := r.get(name)) is None else v for r in rows]
            columns[name] = np.array(values, dtype=np.float32).reshape(-1, 1)
        else:
            texts = ["" if (v := r.get(name)) is None else str(v) for r in rows]
            columns[name] = np.array(texts, dtype=object).reshape(-1, 1)
    return columns


def create_app() -> App:
    """The app for the ONNX file named by ``PROBSERVE_BENCH_ONNX``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    provider = _PROVIDERS[os.environ.get("PROBSERVE_BENCH_PROVIDERS", "cpu")]
    session = ort.InferenceSession(
        os.environ["PROBSERVE_BENCH_ONNX"], options, providers=[provider]
    )
    if session.get_providers()[0] != provider:  # onnxruntime falls back to CPU silently
        raise RuntimeError(f"{provider} did not start: {session.get_providers()}")
    inputs = [(i.name, i.type == "tensor(float)") for i in session.get_inputs()]
    first_output = [session.get_outputs()[0].name]
    return predictions_app(
        lambda rows: session.run(first_output, _columns(inputs, rows))[0].mean(axis=1)
    )


def predictions_app(predict: Callable[[list[dict[str, Any]]], Any]) -> App:
    """The ASGI app: ``{"instances": rows}`` -> ``{"predictions": predict(rows).tolist()}``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan and websockets: nothing to do
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            probs = predict(orjson.loads(body)["instances"])
            status, answer = 200, orjson.dumps({"predictions": probs.tolist()})
        except Exception as exc:  # the floor answers 400 for any bad body, never a traceback
            status, answer = 400, orjson.dumps({"error": type(exc).__name__})
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": answer})

    return app
