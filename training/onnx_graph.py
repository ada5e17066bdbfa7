"""Build the bundle's single ONNX graph: raw features in, per-member probabilities out.

Preprocessing (imputation and standardisation of numerics, one-hot with an unknown bucket for
categoricals) and every ensemble member live in one graph, so clients send raw values and
training/serving skew cannot happen. The graph is written with ``onnx.helper`` from the trained
weight tensors: the members are batched [K, in, out] matmuls that broadcast over the member axis,
which keeps the graph small and its bytes a pure function of the weights.

Encoded column order (mirrored by :func:`training.preprocess.encode_features`): every numeric
feature in manifest order, then for each categorical feature in manifest order its known
categories followed by one unknown column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from service.bundle import MEMBER_PROBABILITIES_OUTPUT, CategoricalFeature, Feature, NumericFeature

OPSET = 17
ML_OPSET = 3
PRODUCER = "probserve"


@dataclass(frozen=True)
class EnsembleWeights:
    """Batched weights of K MLP members: ``layers[i] = (W [K, in, out], b [K, out])``."""

    layers: Sequence[tuple[NDArray[np.float32], NDArray[np.float32]]]
    temperatures: NDArray[np.float32]  # [K]

    @property
    def members(self) -> int:
        """Number of ensemble members K."""
        return int(self.layers[0][0].shape[0])


def build_ensemble_graph(features: Sequence[Feature], weights: EnsembleWeights) -> onnx.ModelProto:
    """Return a checked ONNX model for ``features`` and ``weights`` (deterministic bytes)."""
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    inputs: list[onnx.ValueInfoProto] = []
    blocks: list[str] = []

    def const(name: str, value: NDArray[np.generic]) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    numeric = [f for f in features if isinstance(f, NumericFeature)]
    categorical = [f for f in features if isinstance(f, CategoricalFeature)]
    for f in features:
        elem = TensorProto.FLOAT if isinstance(f, NumericFeature) else TensorProto.STRING
        inputs.append(helper.make_tensor_value_info(f.name, elem, ["N", 1]))

    if numeric:
        means = np.array([f.mean for f in numeric], dtype=np.float32)
        stds = np.array([f.std for f in numeric], dtype=np.float32)
        nodes.append(helper.make_node("Concat", [f.name for f in numeric], ["num_raw"], axis=1))
        nodes.append(helper.make_node("IsNaN", ["num_raw"], ["num_missing"]))
        nodes.append(
            helper.make_node(
                "Where", ["num_missing", const("num_mean", means), "num_raw"], ["num_imputed"]
            )
        )
        nodes.append(helper.make_node("Sub", ["num_imputed", "num_mean"], ["num_centred"]))
        nodes.append(
            helper.make_node("Div", ["num_centred", const("num_std", stds)], ["num_scaled"])
        )
        blocks.append("num_scaled")

    # Only when a categorical uses it: an unused initializer makes onnxruntime warn on every load.
    if categorical:
        onehot_values = const("onehot_values", np.array([0.0, 1.0], dtype=np.float32))
    for i, f in enumerate(categorical):
        depth = len(f.categories) + 1
        nodes.append(
            helper.make_node(
                "LabelEncoder",
                [f.name],
                [f"cat{i}_index"],
                domain="ai.onnx.ml",
                keys_strings=list(f.categories),
                values_int64s=list(range(len(f.categories))),
                default_int64=len(f.categories),
            )
        )
        nodes.append(
            helper.make_node(
                "Squeeze", [f"cat{i}_index", const(f"cat{i}_axis", np.array([1]))], [f"cat{i}_flat"]
            )
        )
        nodes.append(
            helper.make_node(
                "OneHot",
                [
                    f"cat{i}_flat",
                    const(f"cat{i}_depth", np.array(depth, dtype=np.int64)),
                    onehot_values,
                ],
                [f"cat{i}_onehot"],
                axis=-1,
            )
        )
        blocks.append(f"cat{i}_onehot")

    if len(blocks) == 1:
        nodes.append(helper.make_node("Identity", blocks, ["encoded"]))
    else:
        nodes.append(helper.make_node("Concat", blocks, ["encoded"], axis=1))

    hidden = "encoded"
    last = len(weights.layers) - 1
    for i, (w, b) in enumerate(weights.layers):
        w32 = np.asarray(w, dtype=np.float32)
        b32 = np.asarray(b, dtype=np.float32)[:, None, :]
        # [N, in] @ [K, in, out] broadcasts to [K, N, out]; later: [K, N, in] @ [K, in, out].
        nodes.append(helper.make_node("MatMul", [hidden, const(f"w{i}", w32)], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", const(f"b{i}", b32)], [f"z{i}"]))
        if i < last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i}"]))
            hidden = f"h{i}"
    temps = np.asarray(weights.temperatures, dtype=np.float32).reshape(-1, 1, 1)
    nodes.append(
        helper.make_node("Div", [f"z{last}", const("temperature", temps)], ["scaled_logits"])
    )
    nodes.append(helper.make_node("Softmax", ["scaled_logits"], ["member_probs_knc"], axis=-1))
    nodes.append(
        helper.make_node(
            "Transpose", ["member_probs_knc"], [MEMBER_PROBABILITIES_OUTPUT], perm=[1, 0, 2]
        )
    )

    classes = int(weights.layers[-1][0].shape[2])
    output = helper.make_tensor_value_info(
        MEMBER_PROBABILITIES_OUTPUT, TensorProto.FLOAT, ["N", weights.members, classes]
    )
    graph = helper.make_graph(nodes, "probserve_ensemble", inputs, [output], initializer=inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name=PRODUCER,
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
