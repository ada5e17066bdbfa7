"""KServe's Python model server serving the benchmark's ONNX file through a minimal custom model.

Runs in its own virtual environment (`probserve bench` installs it under ``.bench/``):
``python kserve_model.py --onnx FILE --name MODEL --port P [--grpc-port G]``. V2 REST (and gRPC
on G): one [N] tensor per graph input in, the ensemble-mean class probabilities [N, C] out.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class OnnxModel(Model):  # type: ignore[misc]
    """One ONNX Runtime session; no pre- or post-processing beyond the graph's own."""

    def __init__(self, name: str, onnx: str) -> None:
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        self.numeric = {i.name: i.type == "tensor(float)" for i in self.session.get_inputs()}
        self.output = [self.session.get_outputs()[0].name]
        self.ready = True

    def predict(self, payload: InferRequest, headers: Any = None) -> InferResponse:
        """Run the graph on the request's tensors."""
        columns: dict[str, Any] = {}
        for tensor in payload.inputs:
            # as_numpy reads JSON data and gRPC raw contents alike.
            if self.numeric[tensor.name]:
                columns[tensor.name] = tensor.as_numpy().astype(np.float32).reshape(-1, 1)
            else:
                columns[tensor.name] = tensor.as_numpy().astype(object).reshape(-1, 1)
        probs = self.session.run(self.output, columns)[0].mean(axis=1).astype(np.float32)
        out = InferOutput(name="probabilities", shape=list(probs.shape), datatype="FP32")
        out.set_data_from_numpy(probs, binary_data=False)
        return InferResponse(
            model_name=self.name, infer_outputs=[out], response_id=payload.id or "bench"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=None)
    args, _ = parser.parse_known_args()
    grpc = {} if args.grpc_port is None else {"grpc_port": args.grpc_port}
    server = ModelServer(
        http_port=args.port, workers=1, enable_grpc=args.grpc_port is not None,
        enable_docs_url=False, access_log_format=None, enable_latency_logging=False, **grpc,
    )  # fmt: skip
    # The server configures logging in its constructor; uvicorn's access log is then turned off
    # so no contender pays for a log line per request.
    logging.getLogger("uvicorn.access").disabled = True
    server.start([OnnxModel(args.name, args.onnx)])
