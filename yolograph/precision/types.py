"""Element types of a graph's tensors, and which node inputs/outputs must share one type.

ONNX types an op by *type constraints*: every input and output names one (``T``, ``T1`` ...) or a
fixed type (``tensor(float)``). Slots naming the same constraint must hold the same element type;
a constraint used by one slot only (Shape's input, Cast's input, Resize's ``roi``) accepts any of
its types on its own. Converting a node to float16 therefore means: every float slot of a
*shared* constraint becomes float16, nothing else changes. These helpers read that off the op
schemas, so the conversion needs no per-op table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from yolograph.ir.model import Model

FLOAT32 = np.dtype(np.float32)
FLOAT16 = np.dtype(np.float16)
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
FLOAT16_TINY = float(np.finfo(np.float16).tiny)  # 6.1e-5: smaller normals lose precision (subnormal)

# Ops whose output type comes from an attribute, not from their inputs: left in float32.
ATTRIBUTE_TYPED_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                                 "EyeLike", "Multinomial", "Bernoulli"})


def tensor_dtypes(model: Model) -> dict[str, np.dtype]:
    """Element type of every tensor of `model` (ONNX type inference, plus what the graph states)."""
    proto = model.to_onnx()
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001, S110 - custom-domain ops: keep what the graph states
        pass
    types: dict[str, np.dtype] = {}
    for value in (*proto.graph.value_info, *proto.graph.input, *proto.graph.output):
        elem = value.type.tensor_type.elem_type
        if elem:
            types[value.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    for init in proto.graph.initializer:
        types[init.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
    for name, tensor in model.graph.tensors().items():
        if isinstance(tensor, gs.Constant):
            types[name] = np.dtype(tensor.values.dtype)
        elif name not in types and tensor.dtype is not None:
            types[name] = _np_dtype(tensor.dtype)
    return types


@dataclass(frozen=True)
class SlotTypes:
    """For one node: which input / output positions follow its precision, and whether float16 is allowed."""

    inputs: frozenset[int]
    outputs: frozenset[int]
    allows_float16: bool


def slot_types(node: gs.Node, opset: int) -> SlotTypes:
    """The node's precision-following slots (those of a type constraint shared by 2+ slots)."""
    domain = getattr(node, "domain", None) or ""
    return _slot_types(node.op, domain, opset, len(node.inputs), len(node.outputs))


@lru_cache(maxsize=4096)
def _slot_types(op: str, domain: str, opset: int, n_in: int, n_out: int) -> SlotTypes:
    if domain not in ("", "ai.onnx") or op in ATTRIBUTE_TYPED_OPS:
        return SlotTypes(frozenset(), frozenset(), False)
    try:
        schema = onnx.defs.get_schema(op, opset, domain)
    except onnx.defs.SchemaError:
        return SlotTypes(frozenset(), frozenset(), False)
    ins = [_formal(schema.inputs, i) for i in range(n_in)]
    outs = [_formal(schema.outputs, i) for i in range(n_out)]
    constraints = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    uses: dict[str, int] = {}
    for name in (*ins, *outs):
        if name in constraints:
            uses[name] = uses.get(name, 0) + 1
    shared = {name for name, count in uses.items()
              if count > 1 and "tensor(float)" in constraints[name]}
    if op == "Cast":  # the output type is the `to` attribute: the conversion rewrites it
        return SlotTypes(frozenset(), frozenset({0}), True)
    allows = bool(shared) and all("tensor(float16)" in constraints[name] for name in shared)
    return SlotTypes(frozenset(i for i, name in enumerate(ins) if name in shared),
                     frozenset(i for i, name in enumerate(outs) if name in shared), allows)


def _formal(params, index: int) -> str:
    if not params:
        return ""
    if index < len(params):
        return params[index].type_str
    last = params[-1]  # variadic: the last formal parameter covers the rest
    variadic = last.option == onnx.defs.OpSchema.FormalParameterOption.Variadic
    return last.type_str if variadic else ""


def _np_dtype(dtype) -> np.dtype:
    if isinstance(dtype, int):
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype))
    return np.dtype(dtype)


def check_type_consistency(model: Model) -> None:
    """Raise onnx's ValidationError / InferenceError when the graph's types do not agree.

    The ONNX checker with ``full_check`` runs strict type and shape inference: a float16 tensor fed
    where its op needs float32 (or the other way round) fails here, as a strongly typed build would.
    """
    proto = model.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
