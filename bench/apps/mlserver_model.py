"""MLServer's custom runtime for the benchmark: one ONNX Runtime session, nothing else.

Runs in its own virtual environment (`probserve bench` installs it under ``.bench/``) through
``mlserver start DIR``, where the harness writes ``settings.json`` (inference in the main
process: ``parallel_workers`` 0; metrics off; access log off) and ``model-settings.json``
(``implementation: mlserver_model.OnnxModel``, ``parameters.uri``: the ONNX file).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class OnnxModel(MLModel):  # type: ignore[misc]
    """V2 tensors in (one [N] per graph input), ensemble-mean probabilities [N, C] out."""

    async def load(self) -> bool:
        """Open the session named by ``parameters.uri``."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        uri = self.settings.parameters.uri
        self.session = ort.InferenceSession(uri, options, providers=["CPUExecutionProvider"])
        self.numeric = {i.name: i.type == "tensor(float)" for i in self.session.get_inputs()}
        self.output = [self.session.get_outputs()[0].name]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Run the graph on the request's tensors."""
        columns: dict[str, Any] = {}
        for tensor in payload.inputs:
            data = tensor.data.root
            if self.numeric[tensor.name]:
                columns[tensor.name] = np.asarray(data, dtype=np.float32).reshape(-1, 1)
            else:
                texts = [v.decode() if isinstance(v, bytes) else str(v) for v in data]
                columns[tensor.name] = np.asarray(texts, dtype=object).reshape(-1, 1)
        probs = self.session.run(self.output, columns)[0].mean(axis=1)
        out = ResponseOutput(
            name="probabilities",
            shape=list(probs.shape),
            datatype="FP32",
            data=probs.ravel().tolist(),
        )
        return InferenceResponse(model_name=self.name, outputs=[out])
