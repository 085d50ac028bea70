"""Readiness rules of a strongly typed TensorRT build (TensorRT 11, and 10.x with STRONGLY_TYPED).

A strongly typed network takes every tensor's type from the graph and never picks another, so a graph
that would fail that build fails here first, naming the node (pure graph analysis, CPU only):

- ``type-unknown`` (error): a tensor whose element type ONNX type inference cannot tell.
- ``missing-cast`` (error): a node whose inputs of one type constraint mix float32 and float16; the
  graph needs a Cast where the two meet (what to-fp16 places).
- ``type-mismatch`` (error): any other disagreement of types within one node, or one strict ONNX type
  inference reports.
- ``float64`` (error): TensorRT has no double-precision tensors.
- ``removed-in-11`` (error, trt11 only): a node calling a TensorRT plugin TensorRT 11 removed.

The Q/DQ rules TensorRT fuses by (per-channel weights on axis 0, symmetric int8, zero points 0, matching
pairs) are the INT8 rules of readiness.py and apply to both targets.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx

from yolograph.ir.model import Model
from yolograph.precision.types import FLOAT16, FLOAT32, slot_types, tensor_dtypes

# Plugins TensorRT 11.0 removed (its release notes); an ONNX node of one of these op types was built
# by TensorRT 10's plugin fallback and has no implementation in 11.
REMOVED_IN_11_PLUGINS = frozenset({
    "BatchTilePlugin_TRT", "Clip_TRT", "CoordConvAC", "CropAndResize", "CropAndResizeDynamic",
    "CustomGeluPluginDynamic", "LReLU_TRT", "Normalize_TRT", "SingleStepLSTMPlugin", "SpecialSlice_TRT",
    "NMS_TRT", "NMSDynamic_TRT", "Proposal", "ProposalDynamic",
})


def has_float16(model: Model) -> bool:
    """True when any tensor of the graph is float16 (a to-fp16 graph)."""
    return any(dtype == FLOAT16 for dtype in tensor_dtypes(model).values())


def strong_typing_findings(model: Model, target: str, finding) -> Iterator:
    """Findings (built with `finding(severity, node, message, code)`) of the strongly typed rules."""
    dtypes = tensor_dtypes(model)
    opset = model.opset
    reported: set[str] = set()
    for node in model.graph.nodes:
        if target == "trt11" and node.op in REMOVED_IN_11_PLUGINS:
            yield finding("error", node.name, f"{node.op} is a TensorRT plugin TensorRT 11 removed; replace it "
                          "with standard ONNX ops (or build with TensorRT 10).", "removed-in-11")
        for tensor in [*node.inputs, *node.outputs]:
            if not tensor.name:
                continue
            dtype = dtypes.get(tensor.name)
            if dtype is None and node.op not in ("Constant",):
                yield finding("error", node.name, f"the type of {tensor.name!r} cannot be inferred; a strongly "
                              "typed build needs every tensor's type: give the node a standard op or the "
                              "tensor a value_info type.", "type-unknown")
            elif dtype == np.float64:
                yield finding("error", node.name, f"{tensor.name!r} is float64, which TensorRT has no tensors of; "
                              "cast it to float32.", "float64")
        slots = slot_types(node, opset)
        shared = [node.inputs[i] for i in slots.inputs if node.inputs[i].name] + \
                 [node.outputs[i] for i in slots.outputs]
        kinds = {dtypes[t.name] for t in shared if t.name in dtypes and dtypes[t.name].kind == "f"}
        if len(kinds) > 1:
            reported.add(node.name)
        if {FLOAT32, FLOAT16} <= kinds:
            halves = [t.name for t in shared if dtypes.get(t.name) == FLOAT16][:2]
            singles = [t.name for t in shared if dtypes.get(t.name) == FLOAT32][:2]
            yield finding("error", node.name, f"{node.op} mixes float32 ({', '.join(singles)}) and float16 "
                          f"({', '.join(halves)}) where one type is required; insert a Cast where they meet "
                          "(to-fp16 places them).", "missing-cast")
        elif len(kinds) > 1:
            yield finding("error", node.name, f"{node.op} mixes {', '.join(sorted(k.name for k in kinds))} where "
                          "one type is required; insert a Cast.", "type-mismatch")
    yield from _strict_inference(model, finding, reported)


def _strict_inference(model: Model, finding, reported: set[str]) -> Iterator:
    """ONNX's strict type inference: declared types that disagree with what the ops compute."""
    try:
        onnx.shape_inference.infer_shapes(model.to_onnx(), check_type=True, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - InferenceError for type errors; custom ops are reported elsewhere
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "No Op registered" in text or "Unsupported domain" in text:
            return
        if _node_in(text) in reported:
            return
        yield finding("error", _node_in(text), f"strict ONNX type inference fails: {text[:300]}", "type-mismatch")


def _node_in(text: str) -> str:
    marker = "node name: "
    if marker in text:
        return text.split(marker, 1)[1].split(")", 1)[0].strip() or "(model)"
    return "(model)"
