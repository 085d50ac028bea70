"""fold-bn: fold BatchNormalization into the preceding Conv/ConvTranspose, or into Mul+Add.

Conv+BN (with or without conv bias, grouped and depthwise included) and ConvTranspose+BN become
one conv with rescaled weights and a new bias; a BN with no foldable producer becomes x*scale+shift
(Mul, Add). Numerically equal within 1e-4 relative: the fold only reorders float arithmetic. Refused on
a float16 model (run it before to-fp16).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.ir.graph_view import constant_value, replace_all_uses
from yolograph.ir.model import Model
from yolograph.pipeline.passes import Contract, NoOptions, Pass, PassResult, register_pass


@register_pass("fold-bn")
class FoldBatchNorm(Pass):
    """Fold BatchNormalization into the producing Conv/ConvTranspose (else into Mul+Add)."""

    Options = NoOptions
    contract = Contract.tolerance(1e-4)
    removes = frozenset({"batchnorm"})
    # Folding rescales weights; in float16 that rounding alone exceeds the 1e-4 tolerance (5.7% on the
    # random-BN fixture after to-fp16), so the fold belongs before to-fp16.
    excludes = frozenset({"float16"})

    def run(self, model: Model) -> PassResult:
        graph = model.graph
        folded_conv = folded_affine = skipped = 0
        for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
            affine = bn_affine(bn)
            if affine is None or len(bn.outputs) != 1 and any(t.outputs for t in bn.outputs[1:]):
                skipped += 1
                continue
            scale, shift = affine
            conv = _foldable_producer(graph, bn)
            if conv is not None:
                _fold_into_conv(graph, conv, bn, scale, shift)
                folded_conv += 1
            else:
                _replace_with_mul_add(model, bn, scale, shift)
                folded_affine += 1
        if folded_conv or folded_affine:
            graph.cleanup()
        return PassResult(
            changed=bool(folded_conv or folded_affine),
            stats={"folded_into_conv": folded_conv, "to_mul_add": folded_affine, "skipped": skipped},
        )


def bn_affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (scale, shift) with BN(x) = x*scale + shift, or None if a parameter is not constant."""
    params = [constant_value(t) for t in bn.inputs[1:5]]
    if any(p is None for p in params) or bn.attrs.get("training_mode", 0):
        return None
    gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
    scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return scale, beta - mean * scale


def _foldable_producer(graph: gs.Graph, bn: gs.Node) -> gs.Node | None:
    source = bn.inputs[0]
    if len(source.inputs) != 1 or len(source.outputs) != 1 or source in graph.outputs:
        return None
    conv = source.inputs[0]
    if conv.op not in ("Conv", "ConvTranspose") or constant_value(conv.inputs[1]) is None:
        return None
    if len(conv.inputs) > 2 and constant_value(conv.inputs[2]) is None:
        return None
    return conv


def _fold_into_conv(graph: gs.Graph, conv: gs.Node, bn: gs.Node, scale: np.ndarray, shift: np.ndarray) -> None:
    weight_tensor = conv.inputs[1]
    weight = np.asarray(constant_value(weight_tensor), dtype=np.float64)
    out_channels = scale.shape[0]
    if conv.op == "Conv":
        folded = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    else:  # ConvTranspose weight [Cin, Cout/g, k...]: output channel = group * Cout/g + j
        groups = int(conv.attrs.get("group", 1))
        per_group = out_channels // groups
        grouped = weight.reshape(groups, weight.shape[0] // groups, per_group, *weight.shape[2:])
        folded = (grouped * scale.reshape(groups, 1, per_group, *([1] * (weight.ndim - 2)))).reshape(weight.shape)
    bias = constant_value(conv.inputs[2]) if len(conv.inputs) > 2 else np.zeros(out_channels)
    new_bias = np.asarray(bias, dtype=np.float64) * scale + shift
    dtype = np.asarray(constant_value(weight_tensor)).dtype
    shared = len(weight_tensor.outputs) > 1
    weight_name = weight_tensor.name if not shared else f"{conv.name}.folded_weight"
    bias_name = _bias_name(graph, weight_name)
    conv.inputs[1] = gs.Constant(weight_name if not shared else weight_name, folded.astype(dtype))
    if not shared:
        weight_tensor.name = f"{weight_name}.unfolded"  # detached; removed by cleanup
    bias_constant = gs.Constant(bias_name, new_bias.astype(dtype))
    if len(conv.inputs) > 2:
        conv.inputs[2] = bias_constant
    else:
        conv.inputs.append(bias_constant)
    replace_all_uses(graph, bn.outputs[0], conv.outputs[0])
    bn.outputs.clear()


def _bias_name(graph: gs.Graph, weight_name: str) -> str:
    base = weight_name[: -len("weight")] + "bias" if weight_name.endswith("weight") else f"{weight_name}.bias"
    existing = graph.tensors()
    name, suffix = base, 1
    while name in existing:
        name, suffix = f"{base}_{suffix}", suffix + 1
    return name


def _replace_with_mul_add(model: Model, bn: gs.Node, scale: np.ndarray, shift: np.ndarray) -> None:
    graph = model.graph
    shape = model.shape_of(bn.inputs[0].name)
    rank = len(shape) if shape else 4
    broadcast = (1, -1) + (1,) * (rank - 2)
    dtype = _float_dtype(bn)  # float16 after to-fp16: a float32 constant would not type-check
    mul_out = gs.Variable(f"{bn.name}/Mul_output_0", dtype=dtype)
    mul = gs.Node("Mul", f"{bn.name}/Mul", inputs=[bn.inputs[0], gs.Constant(f"{bn.name}.scale", scale.reshape(broadcast).astype(dtype))], outputs=[mul_out])
    add = gs.Node("Add", f"{bn.name}/Add", inputs=[mul_out, gs.Constant(f"{bn.name}.shift", shift.reshape(broadcast).astype(dtype))], outputs=list(bn.outputs[:1]))
    bn.outputs.clear()
    graph.nodes.extend([mul, add])


def _float_dtype(bn: gs.Node) -> np.dtype:
    """The float type the BN computes in, read from its scale parameter (float32 unless stated)."""
    gamma = constant_value(bn.inputs[1])
    dtype = np.asarray(gamma).dtype if gamma is not None else np.dtype(np.float32)
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float32)
