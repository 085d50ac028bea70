"""Static shape inference for every tensor of a Model, via ONNX's own shape inference."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx
import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from yolograph.ir.model import Model


# ONNX Runtime contrib ops that keep their input's shape; ONNX shape inference stops at them.
SHAPE_PRESERVING_CONTRIB_OPS = frozenset({"QuickGelu", "Gelu", "FastGelu", "BiasGelu"})


def infer_static_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    """Map tensor name -> static shape for every tensor whose shape ONNX can infer."""
    proto = model.to_onnx()
    _stand_in_for_contrib_ops(proto)
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # a graph with a custom op still has the shapes graphsurgeon knows
        pass
    shapes: dict[str, tuple[int, ...]] = {}
    for value in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    for name, tensor in model.graph.tensors().items():
        if isinstance(tensor, gs.Constant):
            shapes[name] = tuple(tensor.values.shape)
    return shapes


def _stand_in_for_contrib_ops(proto: onnx.ModelProto) -> None:
    """Replace shape-preserving contrib ops by Sigmoid (same shape rule) so inference continues."""
    for node in proto.graph.node:
        if node.domain == "com.microsoft" and node.op_type in SHAPE_PRESERVING_CONTRIB_OPS:
            node.op_type, node.domain = "Sigmoid", ""
            del node.input[1:]
            del node.attribute[:]
