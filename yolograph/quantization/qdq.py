"""Graph edits for Q/DQ: insert pairs from a plan, find activation groups, fold weights, quantize biases.

Between insert-qdq and calibrate a quantized model holds float weights behind a weight
QuantizeLinear (so rounding techniques still see the float values) and placeholder activation scales.
`finalize_weights` turns every weight Q into an int8 initializer and (for profiles that want it) every
Conv bias into int32 + DequantizeLinear, which is the form ONNX Runtime fuses into QLinearConv.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.ir.graph_view import constant_value
from yolograph.ir.metadata import QDQ_PROFILE as PROFILE_KEY  # noqa: F401  (the passes read it from here)
from yolograph.ir.model import Model
from yolograph.quantization.placement import QdqPlan
from yolograph.quantization.profiles import QdqProfile


@dataclass
class ActivationGroup:
    """Activation tensors quantized with one shared (scale, zero point) pair."""

    scale: gs.Constant
    zero_point: gs.Constant
    tensors: list[str]  # the float tensors fed to the group's QuantizeLinear nodes

    @property
    def signed(self) -> bool:
        return np.asarray(self.zero_point.values).dtype == np.int8

    def set(self, scale: float, zero_point: int) -> None:
        self.scale.values = np.asarray(scale, dtype=np.float32)
        self.zero_point.values = np.asarray(zero_point, dtype=self.zero_point.values.dtype)


def insert_qdq(model: Model, plan: QdqPlan, profile: QdqProfile) -> dict[str, int]:
    """Insert activation Q/DQ pairs (placeholder scale 1) and weight Q/DQ (per-channel) as `plan` says."""
    graph = model.graph
    tensors = graph.tensors()
    zp_dtype = np.int8 if profile.activation_signed else np.uint8
    zp_init = 0 if profile.activation_signed or profile.activation_symmetric else 128
    pairs = 0
    for group in plan.groups:
        scale = gs.Constant(f"{group[0]}_qscale", np.asarray(1.0, dtype=np.float32))
        zero_point = gs.Constant(f"{group[0]}_qzero", np.asarray(zp_init, dtype=zp_dtype))
        for name in group:
            _insert_pair(graph, tensors[name], scale, zero_point)
            pairs += 1
    nodes = {n.name: n for n in graph.nodes}
    for conv_name in plan.weight_convs:
        _quantize_weight_input(graph, nodes[conv_name], profile)
    return {"activation_qdq": pairs, "scale_groups": len(plan.groups), "quantized_weights": len(plan.weight_convs)}


def _insert_pair(graph: gs.Graph, tensor: gs.Variable, scale: gs.Constant, zero_point: gs.Constant) -> None:
    consumers = list(tensor.outputs)
    quantized = gs.Variable(f"{tensor.name}_quantized", dtype=zero_point.values.dtype)
    dequantized = gs.Variable(f"{tensor.name}_dequantized", dtype=np.float32, shape=tensor.shape)
    q = gs.Node("QuantizeLinear", f"{tensor.name}_QuantizeLinear", inputs=[tensor, scale, zero_point], outputs=[quantized])
    dq = gs.Node("DequantizeLinear", f"{tensor.name}_DequantizeLinear", inputs=[quantized, scale, zero_point], outputs=[dequantized])
    for consumer in consumers:
        for index, value in enumerate(consumer.inputs):
            if value is tensor:
                consumer.inputs[index] = dequantized
    graph.nodes.extend([q, dq])


def weight_scales(weight: np.ndarray, qmax: int, axis: int = 0) -> np.ndarray:
    """Symmetric per-channel scales max|w|/qmax (channels that are all zero get scale 1)."""
    reduce_axes = tuple(i for i in range(weight.ndim) if i != axis)
    absmax = np.max(np.abs(weight.astype(np.float64)), axis=reduce_axes)
    return np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)


def _quantize_weight_input(graph: gs.Graph, conv: gs.Node, profile: QdqProfile) -> None:
    weight_tensor = conv.inputs[1]
    weight = np.asarray(constant_value(weight_tensor), dtype=np.float32)
    scales = weight_scales(weight, profile.weight_qmax, profile.weight_axis)
    if len(weight_tensor.outputs) > 1:  # shared weight: give this conv its own copy
        weight_tensor = gs.Constant(f"{conv.name}.weight", weight.copy())
    scale = gs.Constant(f"{weight_tensor.name}_wscale", scales)
    zero_point = gs.Constant(f"{weight_tensor.name}_wzero", np.zeros(scales.shape, dtype=np.int8))
    quantized = gs.Variable(f"{weight_tensor.name}_quantized", dtype=np.int8)
    dequantized = gs.Variable(f"{weight_tensor.name}_dequantized", dtype=np.float32, shape=weight.shape)
    attrs = {"axis": profile.weight_axis}
    q = gs.Node("QuantizeLinear", f"{weight_tensor.name}_QuantizeLinear", attrs=dict(attrs),
                inputs=[weight_tensor, scale, zero_point], outputs=[quantized])
    dq = gs.Node("DequantizeLinear", f"{weight_tensor.name}_DequantizeLinear", attrs=dict(attrs),
                 inputs=[quantized, scale, zero_point], outputs=[dequantized])
    conv.inputs[1] = dequantized
    graph.nodes.extend([q, dq])


def rewrite_silu(model: Model, op: str, region_nodes: set[str]) -> int:
    """Replace each Mul(x, Sigmoid(x)) whose nodes are in `region_nodes` by one `op` node (com.microsoft
    QuickGelu with alpha=1 computes x * sigmoid(x)). Returns how many were rewritten."""
    graph = model.graph
    count = 0
    for mul in [n for n in graph.nodes if n.op == "Mul" and len(n.inputs) == 2 and n.name in region_nodes]:
        for x, s in (mul.inputs, mul.inputs[::-1]):
            sigmoid = s.inputs[0] if s.inputs else None
            if (sigmoid is not None and sigmoid.op == "Sigmoid" and sigmoid.inputs[0] is x and len(s.outputs) == 1
                    and sigmoid.name in region_nodes):
                fused = gs.Node(op, f"{mul.name}_{op}", attrs={"alpha": 1.0}, inputs=[x], outputs=list(mul.outputs),
                                domain="com.microsoft")
                mul.outputs.clear()
                sigmoid.outputs.clear()
                graph.nodes.append(fused)
                count += 1
                break
    if count:
        graph.cleanup()
    return count


# -- reading a quantized graph ------------------------------------------------------------------------

def is_weight_q(node: gs.Node) -> bool:
    return node.op == "QuantizeLinear" and constant_value(node.inputs[0]) is not None


def activation_groups(model: Model) -> list[ActivationGroup]:
    """Every activation scale group, in graph order (keyed by the shared scale initializer)."""
    groups: dict[str, ActivationGroup] = {}
    for node in model.graph.nodes:
        if node.op != "QuantizeLinear" or is_weight_q(node):
            continue
        scale, zero_point = node.inputs[1], node.inputs[2]
        group = groups.setdefault(scale.name, ActivationGroup(scale, zero_point, []))
        group.tensors.append(node.inputs[0].name)
    return list(groups.values())


@dataclass
class ConvQuantization:
    """A Conv with DQ'd weights: its float weight (or int8 weight), per-channel scales and bias."""

    conv: gs.Node
    weight_q: gs.Node | None  # weight QuantizeLinear (before finalize) or None (int8 already)
    weight_dq: gs.Node

    @property
    def scales(self) -> np.ndarray:
        return np.asarray(self.weight_dq.inputs[1].values, dtype=np.float32)

    def float_weight(self) -> np.ndarray:
        """The float weight before rounding (only available before finalize_weights)."""
        if self.weight_q is None:
            raise ValueError("weights are already folded to int8")
        return np.asarray(constant_value(self.weight_q.inputs[0]), dtype=np.float32)

    def set_float_weight(self, weight: np.ndarray) -> None:
        assert self.weight_q is not None
        self.weight_q.inputs[0].values = weight.astype(np.float32)

    def set_scales(self, scales: np.ndarray) -> None:
        self.weight_dq.inputs[1].values = scales.astype(np.float32)

    def bias(self) -> np.ndarray | None:
        if len(self.conv.inputs) < 3:
            return None
        value = constant_value(self.conv.inputs[2])
        if value is not None:
            return np.asarray(value, dtype=np.float32)
        producer = self.conv.inputs[2].inputs[0] if self.conv.inputs[2].inputs else None
        if producer is not None and producer.op == "DequantizeLinear":
            ints = np.asarray(constant_value(producer.inputs[0]), dtype=np.float64)
            return (ints * np.asarray(constant_value(producer.inputs[1]), dtype=np.float64)).astype(np.float32)
        return None

    def set_bias(self, bias: np.ndarray) -> None:
        """Replace the bias by a float constant (finalize_weights requantizes it)."""
        constant = gs.Constant(f"{self.conv.name}.bias", bias.astype(np.float32))
        if len(self.conv.inputs) < 3:
            self.conv.inputs.append(constant)
        else:
            self.conv.inputs[2] = constant


def quantized_convs(model: Model) -> list[ConvQuantization]:
    """Convs whose weight comes through a DequantizeLinear, in graph order."""
    found = []
    for node in model.graph.nodes:
        if node.op != "Conv" or not node.inputs[1].inputs:
            continue
        dq = node.inputs[1].inputs[0]
        if dq.op != "DequantizeLinear":
            continue
        source = dq.inputs[0].inputs[0] if dq.inputs[0].inputs else None
        weight_q = source if source is not None and is_weight_q(source) else None
        found.append(ConvQuantization(node, weight_q, dq))
    return found


def fake_quantize_weight(weight: np.ndarray, scales: np.ndarray, qmax: int) -> np.ndarray:
    shape = (-1,) + (1,) * (weight.ndim - 1)
    s = scales.reshape(shape).astype(np.float32)
    return (np.clip(np.round(weight / s), -qmax, qmax) * s).astype(np.float32)


def finalize_weights(model: Model, profile: QdqProfile) -> dict[str, int]:
    """Fold weight Q into int8 initializers; quantize Conv biases to int32 when the profile wants it."""
    folded = biases = 0
    for item in quantized_convs(model):
        if item.weight_q is not None:
            weight = item.float_weight()
            shape = (-1,) + (1,) * (weight.ndim - 1)
            qmax = profile.weight_qmax
            ints = np.clip(np.round(weight / item.scales.reshape(shape)), -qmax, qmax).astype(np.int8)
            item.weight_dq.inputs[0] = gs.Constant(f"{item.weight_q.inputs[0].name}_int8", ints)
            item.weight_q.outputs.clear()
            folded += 1
        if profile.quantize_bias and _quantize_bias(model.graph, item):
            biases += 1
    model.graph.cleanup()
    return {"int8_weights": folded, "int32_biases": biases}


def _quantize_bias(graph: gs.Graph, item: ConvQuantization) -> bool:
    conv = item.conv
    bias = item.bias()
    source = conv.inputs[0].inputs[0] if conv.inputs[0].inputs else None
    if bias is None or source is None or source.op != "DequantizeLinear":
        return False
    act_scale = float(np.asarray(source.inputs[1].values))
    scales = (act_scale * item.scales.astype(np.float64)).astype(np.float32)
    ints = np.clip(np.round(bias.astype(np.float64) / scales), -(2**31) + 1, 2**31 - 1).astype(np.int32)
    name = f"{conv.name}.bias"
    dequantized = gs.Variable(f"{name}_dequantized", dtype=np.float32, shape=bias.shape)
    dq = gs.Node("DequantizeLinear", f"{name}_DequantizeLinear", attrs={"axis": 0},
                 inputs=[gs.Constant(f"{name}_int32", ints), gs.Constant(f"{name}_bscale", scales),
                         gs.Constant(f"{name}_bzero", np.zeros(scales.shape, dtype=np.int32))],
                 outputs=[dequantized])
    graph.nodes.append(dq)
    if len(conv.inputs) < 3:
        conv.inputs.append(dequantized)
    else:
        conv.inputs[2] = dequantized
    return True


def strip_activation_qdq(model: Model, keep_outputs: list[str] = ()) -> Model:
    """A copy with every activation Q->DQ pair bypassed (weights stay fake-quantized), for collecting
    float statistics; `keep_outputs` tensors are added as graph outputs."""
    work = model.copy()
    graph = work.graph
    for q in [n for n in graph.nodes if n.op == "QuantizeLinear" and not is_weight_q(n)]:
        source = q.inputs[0]
        for dq in list(q.outputs[0].outputs):
            if dq.op != "DequantizeLinear":
                continue
            out = dq.outputs[0]
            for consumer in list(out.outputs):
                for index, value in enumerate(consumer.inputs):
                    if value is out:
                        consumer.inputs[index] = source
            if out in graph.outputs:
                graph.outputs[graph.outputs.index(out)] = source
            dq.outputs.clear()
        q.outputs.clear()
    tensors = graph.tensors()
    present = {t.name for t in graph.outputs}
    for name in keep_outputs:
        if name not in present and name in tensors:
            tensor = tensors[name]
            if tensor.dtype is None:
                tensor.dtype = np.float32
            graph.outputs.append(tensor)
            present.add(name)
    graph.cleanup()
    work.invalidate()
    return work


def float_reference(model: Model) -> Model:
    """A float copy of a not-yet-calibrated Q/DQ model: every Q/DQ bypassed, weights back to float."""
    work = strip_activation_qdq(model)
    for item in quantized_convs(work):
        if item.weight_q is None:
            raise ValueError("float_reference needs the float weights (run it before calibrate)")
        item.conv.inputs[1] = item.weight_q.inputs[0]
    work.graph.cleanup().toposort()
    work.invalidate()
    return work


def dequantize_units(model: Model, conv_names: set[str], tensors: set[str], float_model: Model | None = None) -> None:
    """Keep Convs `conv_names` and activation `tensors` in float: bypass their Q/DQ pairs (all consumers)
    and give the Convs float weights (the weight Q's source, or `float_model`'s weight and bias)."""
    graph = model.graph
    for q in [n for n in graph.nodes if n.op == "QuantizeLinear" and not is_weight_q(n) and n.inputs[0].name in tensors]:
        source = q.inputs[0]
        for dq in list(q.outputs[0].outputs):
            out = dq.outputs[0]
            for consumer in list(out.outputs):
                for index, value in enumerate(consumer.inputs):
                    if value is out:
                        consumer.inputs[index] = source
            dq.outputs.clear()
        q.outputs.clear()
    float_convs = {n.name: n for n in float_model.graph.nodes} if float_model is not None else {}
    for item in quantized_convs(model):
        if item.conv.name not in conv_names:
            continue
        if item.weight_q is not None:
            item.conv.inputs[1] = item.weight_q.inputs[0]
        else:
            reference = float_convs[item.conv.name]
            item.conv.inputs[1] = gs.Constant(f"{item.conv.name}.float_weight", np.asarray(constant_value(reference.inputs[1])))
            if len(reference.inputs) > 2:
                item.conv.inputs[2] = gs.Constant(f"{item.conv.name}.float_bias", np.asarray(constant_value(reference.inputs[2])))
    graph.cleanup().toposort()
    model.invalidate()
