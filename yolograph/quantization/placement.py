"""Where Q/DQ goes: a pure function from (model, profile, region choices) to a placement plan.

The plan names the activation tensors to quantize, grouped by shared scale, and the Convs whose
weights are quantized. Nothing here edits the graph (see qdq.py), so the rules can be tested and
printed on their own.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.ir.graph_view import constant_value
from yolograph.ir.model import Model
from yolograph.quantization.profiles import QdqProfile


@dataclass(frozen=True)
class Region:
    """Which nodes may be quantized.

    head_aware: leave the Detect decode (DFL, box decode, sigmoid scores, final Concat) in float.
    include/exclude: fnmatch patterns on node names; include_ops/exclude_ops: op types. Exclusion wins.
    """

    head_aware: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_ops: tuple[str, ...] = ()
    exclude_ops: tuple[str, ...] = ()

    def selects(self, model: Model, node: gs.Node) -> bool:
        if node.op in self.exclude_ops or any(fnmatch.fnmatchcase(node.name, p) for p in self.exclude):
            return False
        if node.op in self.include_ops or any(fnmatch.fnmatchcase(node.name, p) for p in self.include):
            return True
        return not (self.head_aware and node.name in model.facts.decode_nodes)


@dataclass
class QdqPlan:
    """Activation tensors to quantize (each inner list shares one scale) and Convs with quantized weights."""

    groups: list[list[str]] = field(default_factory=list)
    weight_convs: list[str] = field(default_factory=list)

    @property
    def tensors(self) -> list[str]:
        return [t for group in self.groups for t in group]


def plan_qdq(model: Model, profile: QdqProfile, region: Region = Region(), ops: tuple[str, ...] = (),
             head_outputs: bool = True) -> QdqPlan:
    """The Q/DQ placement for `model` under `profile`, restricted to `region` (and to `ops` if given).

    head_outputs: quantize the outputs of the Detect head's final Convs (the decode then reads their
    dequantized values); False keeps those logits in float at the cost of running the six head Convs
    as float Convs over int8 weights in ORT (no QLinearConv without an output Q).
    """
    graph = model.graph
    _assign_inferred_dtypes(model)
    allowed = set(ops) if ops else set(profile.quantized_ops)
    inside = {n.name for n in graph.nodes if n.op in allowed and region.selects(model, n)}
    nodes = [n for n in graph.nodes if n.name in inside]

    chosen: set[str] = set()
    for node in nodes:
        if node.op in profile.input_ops:
            for tensor in _activation_inputs(node):
                chosen.add(tensor.name)
        if node.op in profile.output_ops and (head_outputs or node.name not in model.facts.head_convs):
            for tensor in node.outputs:
                if _is_float_activation(tensor) and tensor.outputs:
                    chosen.add(tensor.name)
    if profile.residual_add_rule:
        for node in nodes:
            if node.op == "Add":
                chosen.update(t.name for t in residual_add_inputs_to_quantize(node))
    shared = _shared_scale_nodes(nodes, profile)
    if profile.propagate_through_shared:
        chosen |= _propagate(shared, chosen)

    parent = {name: name for name in chosen}
    for node in shared:
        members = [t.name for t in (*_activation_inputs(node), *node.outputs) if t.name in chosen]
        for other in members[1:]:
            _union(parent, members[0], other)
    order = [t.name for t in graph.tensors().values() if t.name in chosen]  # deterministic graph order
    groups: dict[str, list[str]] = {}
    for name in order:
        groups.setdefault(_find(parent, name), []).append(name)

    weight_convs = [
        n.name for n in nodes
        if n.op == "Conv" and n.op in profile.input_ops and constant_value(n.inputs[1]) is not None
        and any(t.name in chosen for t in _activation_inputs(n))
    ]
    return QdqPlan(groups=list(groups.values()), weight_convs=weight_convs)


def residual_add_inputs_to_quantize(add: gs.Node) -> list[gs.Tensor]:
    """TensorRT's residual rule: the Add input computed by a Conv (+SiLU) fuses into that Conv's epilogue
    and stays unquantized; every other activation input gets Q/DQ. With two conv-produced inputs, the
    first fuses and the second is quantized."""
    inputs = _activation_inputs(add)
    fused = next((t for t in inputs if _produced_by_conv(t)), None)
    return [t for t in inputs if t is not fused]


def _produced_by_conv(tensor: gs.Tensor) -> bool:
    """A Conv output, or SiLU(Conv output) written as Mul(x, Sigmoid(x))."""
    if not tensor.inputs:
        return False
    node = tensor.inputs[0]
    if node.op == "Conv":
        return True
    if node.op == "Mul" and len(node.inputs) == 2:
        a, b = node.inputs
        for x, s in ((a, b), (b, a)):
            if s.inputs and s.inputs[0].op == "Sigmoid" and s.inputs[0].inputs[0] is x:
                return bool(x.inputs) and x.inputs[0].op == "Conv"
    return False


def _shared_scale_nodes(nodes: list[gs.Node], profile: QdqProfile) -> list[gs.Node]:
    ops = set(profile.shared_scale_ops)
    if profile.concat_shared_scale:
        ops.add("Concat")
    return [n for n in nodes if n.op in ops]


def _propagate(shared: list[gs.Node], chosen: set[str]) -> set[str]:
    """Quantize the inputs of data-movement ops whose output is quantized, to a fixed point."""
    chosen = set(chosen)
    changed = True
    while changed:
        changed = False
        for node in shared:
            if any(t.name in chosen for t in node.outputs):
                for tensor in [*_activation_inputs(node), *[t for t in node.outputs if t.outputs]]:
                    if tensor.name not in chosen:
                        chosen.add(tensor.name)
                        changed = True
    return chosen


def _activation_inputs(node: gs.Node) -> list[gs.Tensor]:
    """Float, non-constant data inputs (Split's sizes, Resize's scales, Reshape's shape are not data)."""
    data = node.inputs[:1] if node.op in ("Split", "Resize", "Reshape") else node.inputs
    if node.op == "Conv":
        data = node.inputs[:1]
    return [t for t in data if _is_float_activation(t)]


def _is_float_activation(tensor: gs.Tensor) -> bool:
    if isinstance(tensor, gs.Constant) or constant_value(tensor) is not None:
        return False
    if tensor.inputs and tensor.inputs[0].op in ("DequantizeLinear", "QuantizeLinear"):
        return False  # already quantized
    dtype = tensor.dtype
    return dtype is None or np.dtype(dtype) == np.float32 if not isinstance(dtype, int) else dtype == 1


def _assign_inferred_dtypes(model: Model) -> None:
    """Fill in missing tensor dtypes from ONNX type inference, so int64 shape arithmetic (Shape, Gather,
    ...) is never mistaken for a float activation."""
    import onnx

    if all(t.dtype is not None for t in model.graph.tensors().values()):
        return
    try:
        proto = onnx.shape_inference.infer_shapes(model.to_onnx())
    except Exception:  # custom ops: keep what graphsurgeon knows
        return
    types = {v.name: v.type.tensor_type.elem_type for v in (*proto.graph.value_info, *proto.graph.input, *proto.graph.output)}
    for name, tensor in model.graph.tensors().items():
        if tensor.dtype is None and types.get(name):
            tensor.dtype = onnx.helper.tensor_dtype_to_np_dtype(types[name])


def _find(parent: dict[str, str], name: str) -> str:
    while parent[name] != name:
        parent[name] = parent[parent[name]]
        name = parent[name]
    return name


def _union(parent: dict[str, str], a: str, b: str) -> None:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)


# What each output group's head branch gets, by role: the rule the placement follows (see group_rules).
GROUP_BRANCH = {"box": "box", "scores": "class", "mask_coefficients": "mask_coefficients",
                "prototypes": "prototypes", "keypoint_xy": "keypoints", "keypoint_visibility": "keypoints",
                "angle": "angle", "class_probabilities": "classifier"}


def group_rules(model: Model, plan: QdqPlan) -> dict[str, str]:
    """How each output group of `model`'s task is quantized under `plan`, checked.

    A group's values leave its head branch's final convs (one per scale): under profiles that put Q on
    Conv outputs (ort-cpu, tvm) each of those outputs gets a range of its own; under profiles that put
    Q only on Conv inputs (trt, openvino) they leave the conv in float. Everything after them (DFL, box
    and keypoint decode, sigmoids, the angle's Cos/Sin, the Proto's last SiLU, the classifier's
    Gemm/Softmax) is the decode and stays float. A branch output sharing a scale with anything else
    would let a wide group crush a narrow one (32 mask coefficients next to 80 class logits, one angle
    row): that raises PassError.
    """
    from yolograph.errors import PassError

    group_of = {t: len(g) for g in plan.groups for t in g}
    rules: dict[str, str] = {}
    for group in model.facts.output_groups:
        branch = model.facts.branch(GROUP_BRANCH.get(group.role, ""))
        if branch is None:
            rules[group.label] = "float (no head branch found)"
            continue
        tensors = [model.node(n).outputs[0].name for n in branch.nodes if model.node(n).op == "Conv"]
        if branch.role == "classifier" or not tensors:
            rules[group.label] = "float: the classifier and its Softmax are the decode"
            continue
        quantized = [t for t in tensors if t in group_of]
        shared = [t for t in quantized if group_of[t] > 1]
        if shared:
            raise PassError(
                f"The {group.role} branch output {shared[0]!r} shares a quantization scale with other tensors; "
                "give it a range of its own (exclude= it from insert-qdq or fix the profile's shared-scale ops)."
            )
        if quantized:
            rules[group.label] = f"own range per conv output ({len(quantized)} convs), decode float"
        else:
            rules[group.label] = "float conv outputs (Q on conv inputs only), decode float"
    return rules
