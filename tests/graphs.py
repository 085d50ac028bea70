"""Small hand-built ONNX graphs for unit tests of passes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from yolograph.ir.model import Model


def make_model(nodes, inputs, outputs, initializers, opset: int = 17) -> Model:
    graph = helper.make_graph(nodes, "test", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return Model.from_onnx(proto, source=None)


def bn_params(rng: np.random.Generator, channels: int, prefix: str) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.weight": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        f"{prefix}.bias": rng.normal(0, 0.3, channels).astype(np.float32),
        f"{prefix}.running_mean": rng.normal(0, 0.5, channels).astype(np.float32),
        f"{prefix}.running_var": rng.uniform(0.2, 2.0, channels).astype(np.float32),
    }


def conv_bn_model(*, groups: int = 1, bias: bool = False, transpose: bool = False, seed: int = 0,
                  cin: int = 8, cout: int = 8, opset: int = 17) -> Model:
    """x -> Conv/ConvTranspose (optionally biased, grouped) -> BN -> Sigmoid*x -> y."""
    rng = np.random.default_rng(seed)
    op = "ConvTranspose" if transpose else "Conv"
    if transpose:
        weight = rng.normal(0, 0.3, (cin, cout // groups, 3, 3)).astype(np.float32)
    else:
        weight = rng.normal(0, 0.3, (cout, cin // groups, 3, 3)).astype(np.float32)
    inits = {"w": weight, **bn_params(rng, cout, "bn")}
    conv_inputs = ["x", "w"]
    if bias:
        inits["b"] = rng.normal(0, 0.5, cout).astype(np.float32)
        conv_inputs.append("b")
    attrs = dict(group=groups, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    if transpose:
        attrs["strides"] = [2, 2]
    nodes = [
        helper.make_node(op, conv_inputs, ["c"], name="conv", **attrs),
        helper.make_node("BatchNormalization", ["c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                         ["n"], name="bn", epsilon=1e-3),
        helper.make_node("Sigmoid", ["n"], ["s"], name="sig"),
        helper.make_node("Mul", ["n", "s"], ["y"], name="mul"),
    ]
    out_hw = 32 if transpose else 16
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, out_hw, out_hw])],
        inits,
        opset=opset,
    )


def lone_bn_model(seed: int = 0) -> Model:
    """x -> Relu -> BN -> y: a BN with no conv to fold into."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("BatchNormalization", ["r", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                         ["y"], name="bn"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])],
        bn_params(rng, 6, "bn"),
    )
