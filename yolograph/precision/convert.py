"""Rewrite a float32 graph to float16, except named float32 islands, with a Cast wherever they meet.

Every node with float32 tensors in its precision-following slots (see types.py) becomes a float16
node unless it is kept: its float32 constant inputs are stored as float16 copies, its float32
outputs become float16 (a Cast's ``to`` becomes FLOAT16). Where a tensor's new type differs from
what a consumer needs, one Cast per (tensor, type) is inserted, so the result is type-consistent by
construction (checked with ONNX's full checker in the tests). Graph inputs and outputs keep float32
unless `io_float16`; an output computed in float16 gets a final Cast under its own name.

Q/DQ graphs: QuantizeLinear / DequantizeLinear take float16 scales only from opset 19, so a Q/DQ graph
below it is first converted to opset 19 (onnx.version_converter); then a DequantizeLinear with a float16
scale produces float16 and a QuantizeLinear reads float16: INT8 convs with float16 between them, the
TensorRT "best" precision written in the graph.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from yolograph.errors import PassError
from yolograph.ir.graph_view import replace_all_uses
from yolograph.ir.model import Model
from yolograph.precision.types import FLOAT16, FLOAT16_MAX, FLOAT32, slot_types, tensor_dtypes

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
FLOAT16_QDQ_OPSET = 19


@dataclass(frozen=True)
class Conversion:
    """What `convert_to_float16` did."""

    float16_nodes: int
    float32_nodes: int  # nodes with float tensors left in float32 (the islands)
    casts: int
    constants: int  # float32 constants stored as float16
    opset_from: int
    opset_to: int

    def to_json(self) -> dict:
        return dict(vars(self))


def has_qdq(model: Model) -> bool:
    return any(n.op in QDQ_OPS for n in model.graph.nodes)


def upgrade_opset_for_qdq(model: Model) -> tuple[int, int]:
    """Move a Q/DQ graph below opset 19 to opset 19 in place (float16 Q/DQ scales need it)."""
    before = model.opset
    if before >= FLOAT16_QDQ_OPSET or not has_qdq(model):
        return before, before
    from onnx import version_converter

    try:
        proto = version_converter.convert_version(model.to_onnx(), FLOAT16_QDQ_OPSET)
    except Exception as exc:  # the converter raises plain RuntimeErrors naming the op
        raise PassError(f"Float16 Q/DQ needs opset {FLOAT16_QDQ_OPSET}, and ONNX's version converter cannot "
                        f"move this opset-{before} graph there ({str(exc).splitlines()[0]}); re-export the "
                        f"model with opset {FLOAT16_QDQ_OPSET}, or keep the Q/DQ nodes with keep=QuantizeLinear|"
                        "DequantizeLinear.") from exc
    model.graph = gs.import_onnx(proto)
    model.invalidate()
    return before, FLOAT16_QDQ_OPSET


def float16_candidates(model: Model, keep: Collection[str] = ()) -> list[str]:
    """Nodes the conversion turns to float16: float32 in a following slot, float16 allowed, not kept."""
    dtypes = tensor_dtypes(model)
    opset = model.opset
    names = []
    for node in model.graph.nodes:
        if node.name in keep:
            continue
        slots = slot_types(node, opset)
        if slots.allows_float16 and _float32_slots(node, slots, dtypes):
            names.append(node.name)
    return names


def convert_to_float16(model: Model, keep: Collection[str] = (), *, io_float16: bool = False) -> Conversion:
    """Convert `model` in place (see the module docstring); `keep` names float32 nodes."""
    opset_from, opset_to = upgrade_opset_for_qdq(model)
    graph = model.graph
    _fold_constant_nodes(graph)
    graph.cleanup().toposort()
    model.invalidate()
    dtypes = tensor_dtypes(model)
    opset = model.opset
    half = set(float16_candidates(model, keep))
    for node in graph.nodes:  # a constant that does not fit float16 keeps its node in float32
        if node.name in half and any(_overflows(t) for t in _following_inputs(node, opset)):
            half.discard(node.name)

    new_dtype: dict[str, np.dtype] = {}  # non-constant tensors whose type changes
    for node in graph.nodes:
        if node.name not in half:
            continue
        slots = slot_types(node, opset)
        for index in slots.outputs:
            out = node.outputs[index]
            if dtypes.get(out.name) == FLOAT32 and (node.op != "Cast" or _cast_target(node) == FLOAT32):
                new_dtype[out.name] = FLOAT16
    inputs = {t.name for t in graph.inputs}
    if io_float16:
        for tensor in graph.inputs:
            if dtypes.get(tensor.name) == FLOAT32:
                new_dtype[tensor.name] = FLOAT16

    casts: dict[tuple[str, str], gs.Variable] = {}
    half_constants: dict[str, gs.Constant] = {}
    for node in list(graph.nodes):
        want = FLOAT16 if node.name in half else FLOAT32
        slots = slot_types(node, opset)
        for index in sorted(slots.inputs):
            tensor = node.inputs[index]
            if not tensor.name:
                continue  # an omitted optional input
            if isinstance(tensor, gs.Constant):
                if want == FLOAT16 and tensor.values.dtype == np.float32:
                    node.inputs[index] = _half_constant(tensor, half_constants)
                continue
            before = dtypes.get(tensor.name)
            if before != FLOAT32:
                continue
            now = new_dtype.get(tensor.name, FLOAT32)
            if now != want:
                node.inputs[index] = _cast(graph, tensor, want, casts)
        if node.name in half and node.op == "Cast" and _cast_target(node) == FLOAT32:
            node.attrs["to"] = int(onnx.TensorProto.FLOAT16)

    for name, dtype in new_dtype.items():
        tensor = graph.tensors().get(name)
        if tensor is not None and not isinstance(tensor, gs.Constant):
            tensor.dtype = dtype
    if not io_float16:
        _float32_outputs(graph, new_dtype, casts)
    for tensor in graph.inputs:
        if tensor.name in inputs and tensor.name in new_dtype:
            tensor.dtype = FLOAT16
    graph.cleanup().toposort()
    model.invalidate()
    kept = [n for n in graph.nodes if n.name not in half and n.op != "Cast"
            and _float32_slots(n, slot_types(n, opset), dtypes)]
    return Conversion(float16_nodes=len(half), float32_nodes=len(kept), casts=len(casts),
                      constants=len(half_constants), opset_from=opset_from, opset_to=opset_to)


def _float32_slots(node: gs.Node, slots, dtypes: dict[str, np.dtype]) -> bool:
    tensors = [node.inputs[i] for i in slots.inputs] + [node.outputs[i] for i in slots.outputs]
    return any(t.name and dtypes.get(t.name) == FLOAT32 for t in tensors)


def _following_inputs(node: gs.Node, opset: int) -> list[gs.Tensor]:
    return [node.inputs[i] for i in slot_types(node, opset).inputs]


def _overflows(tensor: gs.Tensor) -> bool:
    if not isinstance(tensor, gs.Constant) or tensor.values.dtype != np.float32 or tensor.values.size == 0:
        return False
    return bool(np.max(np.abs(tensor.values)) > FLOAT16_MAX)


def _cast_target(node: gs.Node) -> np.dtype | None:
    to = node.attrs.get("to")
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(to))) if to is not None else None


def _fold_constant_nodes(graph: gs.Graph) -> None:
    """Constant nodes holding float32 become initializers, so they convert like every other constant."""
    for node in [n for n in graph.nodes if n.op == "Constant"]:
        value = node.attrs.get("value")
        out = node.outputs[0]
        if not isinstance(value, gs.Constant) or value.values.dtype != np.float32 or out in graph.outputs:
            continue
        constant = gs.Constant(f"{out.name}.value", np.asarray(value.values))
        replace_all_uses(graph, out, constant)
        node.outputs.clear()


def _half_constant(tensor: gs.Constant, cache: dict[str, gs.Constant]) -> gs.Constant:
    if tensor.name not in cache:
        cache[tensor.name] = gs.Constant(f"{tensor.name}.fp16", np.asarray(tensor.values, dtype=np.float16))
    return cache[tensor.name]


def _cast(graph: gs.Graph, tensor: gs.Variable, dtype: np.dtype, cache: dict[tuple[str, str], gs.Variable]) -> gs.Variable:
    key = (tensor.name, dtype.name)
    if key not in cache:
        suffix = "fp16" if dtype == FLOAT16 else "fp32"
        out = gs.Variable(f"{tensor.name}.{suffix}", dtype=dtype, shape=tensor.shape)
        to = onnx.TensorProto.FLOAT16 if dtype == FLOAT16 else onnx.TensorProto.FLOAT
        graph.nodes.append(gs.Node("Cast", f"{tensor.name}.cast_{suffix}", {"to": int(to)}, [tensor], [out]))
        cache[key] = out
    return cache[key]


def _float32_outputs(graph: gs.Graph, new_dtype: dict[str, np.dtype], casts: dict) -> None:
    """Graph outputs computed in float16 are cast back to float32 under their own name."""
    for position, out in enumerate(list(graph.outputs)):
        if new_dtype.get(out.name) != FLOAT16:
            continue
        name = out.name
        half = gs.Variable(f"{name}.fp16", dtype=FLOAT16, shape=out.shape)
        node = out.inputs[0]
        node.outputs[node.outputs.index(out)] = half
        for consumer in list(out.outputs):
            for index, tensor in enumerate(consumer.inputs):
                if tensor is out:
                    consumer.inputs[index] = half
        final = gs.Variable(name, dtype=FLOAT32, shape=out.shape)
        graph.nodes.append(gs.Node("Cast", f"{name}.cast_output", {"to": int(onnx.TensorProto.FLOAT)}, [half], [final]))
        graph.outputs[position] = final
        casts[(name, "output")] = final
