"""MAC and parameter counting, per node and in total.

MACs count multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul (the ops that dominate
a CNN's cost); elementwise ops are counted as zero, as every published YOLO FLOPs figure does.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING

import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from yolograph.ir.model import Model


@dataclass(frozen=True)
class CostSummary:
    macs: int
    params: int
    per_node_macs: dict[str, int]

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def node_macs(model: Model, node: gs.Node) -> int:
    """Multiply-accumulates of one node; 0 for ops that are not matrix/conv products."""
    if node.op in ("Conv", "ConvTranspose"):
        weight_shape = model.shape_of(node.inputs[1].name)
        if weight_shape is None:
            return 0
        if node.op == "Conv":
            out_shape = model.shape_of(node.outputs[0].name)
            # weight [Cout, Cin/g, kh, kw]: each output element costs Cin/g * kh * kw MACs.
            return prod(out_shape) * prod(weight_shape[1:]) if out_shape else 0
        in_shape = model.shape_of(node.inputs[0].name)
        # ConvTranspose weight [Cin, Cout/g, kh, kw]: each input element scatters into Cout/g*kh*kw.
        return prod(in_shape) * prod(weight_shape[1:]) if in_shape else 0
    if node.op in ("Gemm", "MatMul"):
        a, b = (model.shape_of(t.name) for t in node.inputs[:2])
        out_shape = model.shape_of(node.outputs[0].name)
        if not (a and b and out_shape):
            return 0
        inner = a[-1] if not (node.op == "Gemm" and node.attrs.get("transA", 0)) else a[0]
        return prod(out_shape) * inner
    return 0


PARAMETRIC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "PRelu")


def count_params(model: Model) -> int:
    """Elements of the learned tensors: constant inputs of Conv/Gemm/MatMul/BN/PRelu, seen through a
    DequantizeLinear when quantized. Decode constants (anchors, strides) are not parameters."""
    counted: set[str] = set()
    total = 0
    for node in model.graph.nodes:
        if node.op not in PARAMETRIC_OPS:
            continue
        for tensor in node.inputs[1:]:
            source = _through_dequantize(tensor)
            if isinstance(source, gs.Constant) and source.name not in counted:
                counted.add(source.name)
                total += int(source.values.size)
    return total


def _through_dequantize(tensor: gs.Tensor) -> gs.Tensor:
    """The stored weight behind a (Quantize ->) Dequantize chain: int8 after calibrate, float before."""
    for op in ("DequantizeLinear", "QuantizeLinear"):
        if tensor.inputs and tensor.inputs[0].op == op:
            tensor = tensor.inputs[0].inputs[0]
    return tensor


def model_cost(model: Model) -> CostSummary:
    per_node = {node.name: node_macs(model, node) for node in model.graph.nodes}
    return CostSummary(macs=sum(per_node.values()), params=count_params(model), per_node_macs=per_node)
