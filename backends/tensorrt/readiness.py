"""TensorRT readiness: will TensorRT parse this graph and run its Q/DQ-marked ops in INT8?

Pure graph analysis on CPU (no TensorRT, no GPU). TensorRT's explicit quantization has rules an
ONNX Q/DQ graph may break while still being valid ONNX; each broken rule becomes a `Finding`:

- `error`: TensorRT will refuse the graph, or silently compute something other than the graph says
  (uncalibrated placeholder scales, opset < 13, an op TensorRT lacks, unsigned or asymmetric INT8, int32 bias dequantization,
  per-channel activations, a per-channel weight scale on the wrong axis, a Q not followed by DQ, a
  Q/DQ pair with different parameters, non-constant or non-positive scales, unsupported Resize).
- `warning`: the engine builds but a Q/DQ pair cannot fuse where the graph intends it to, so that op
  runs in float (a Conv with only one of input/weight quantized, a DequantizeLinear that reaches its
  Conv through other ops, Concat inputs with different scales or mixed float/quantized inputs), or
  accuracy suffers (a per-tensor Conv weight scale).

A graph without Q/DQ nodes only gets the model-level checks (opset, ops). The rules follow the
TensorRT developer guide's "Explicit Quantization" chapter and onnx-tensorrt's operator matrix.

Targets: ``trt`` (TensorRT 10) and ``trt11`` (TensorRT 11, strongly typed only). A strongly typed
build, which ``trt11`` always is and a graph holding float16 tensors is on either, also gets the type
rules of typing_rules.py (explicit, consistent types; Casts where float32 and float16 meet; no
float64; for trt11 no plugin TensorRT 11 removed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.backends.tensorrt.typing_rules import has_float16, strong_typing_findings
from yolograph.backends.tensorrt.trt_ops import (
    MIN_OPSET,
    RESIZE_COORDINATE_MODES,
    RESIZE_MODES,
    RESIZE_NEAREST_MODES,
    SUPPORTED_OPS,
    UNSUPPORTED_OPS,
)
from yolograph.ir.graph_view import constant_value, producer
from yolograph.ir.model import Model
from yolograph.pipeline.properties import UNCALIBRATED_KEY

Q, DQ = "QuantizeLinear", "DequantizeLinear"
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# Ops a DequantizeLinear may sit behind and still reach a weighted op: TensorRT has to move it across
# them to fuse, which the readiness check reports because our placement should not rely on it.
DATA_MOVEMENT_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity",
                               "MaxPool", "Pad", "Slice", "Split", "Concat", "Resize"})
MODEL = "(model)"
_SCALE_RTOL = 1e-6


@dataclass(frozen=True)
class Finding:
    """One broken TensorRT rule: severity ('error' | 'warning'), the node, a sentence, a rule code."""

    severity: str
    node: str
    message: str
    code: str

    def __str__(self) -> str:
        return f"{self.severity:<7} {self.node}: {self.message}"


TARGETS = ("trt", "trt11")


def check_readiness(model: Model, target: str = "trt") -> list[Finding]:
    """Every TensorRT readiness finding of `model` for `target` (trt | trt11), errors first; [] means ready."""
    if target not in TARGETS:
        raise ValueError(f"Unknown TensorRT readiness target {target!r}; use one of {', '.join(TARGETS)}.")
    graph = model.graph
    findings = [*_check_opset(model), *_check_ops(graph), *_check_calibrated(model)]
    if target == "trt11" or has_float16(model):
        findings.extend(strong_typing_findings(model, target, Finding))
    for node in graph.nodes:
        if node.op == Q or (node.op == DQ and not _from_quantize(node)):
            findings.extend(_check_quantizer(node))
        if node.op == Q:
            findings.extend(_check_q_feeds_dq(node))
        if node.op == DQ and _from_quantize(node):
            findings.extend(_check_pair(producer(node.inputs[0]), node))
        if node.op in WEIGHTED_OPS:
            findings.extend(_check_weighted(node))
        if node.op == "Concat":
            findings.extend(_check_concat(node))
        if node.op == "Resize":
            findings.extend(_check_resize(node))
    order = {"error": 0, "warning": 1}
    return sorted(findings, key=lambda f: order.get(f.severity, 2))


def format_findings(findings: list[Finding], per_rule: int = 8) -> str:
    """Human-readable findings: a count line, then one line each (at most `per_rule` per rule)."""
    if not findings:
        return "TensorRT readiness: ready, no findings."
    counts = Counter(f.severity for f in findings)
    lines = [f"TensorRT readiness: {counts['error']} error(s), {counts['warning']} warning(s)."]
    shown: Counter[str] = Counter()
    for finding in findings:
        shown[finding.code] += 1
        if shown[finding.code] <= per_rule:
            lines.append(f"  {finding}")
    for code, total in Counter(f.code for f in findings).items():
        if total > per_rule:
            lines.append(f"  ... and {total - per_rule} more '{code}' finding(s) like the above.")
    return "\n".join(lines)


# -- model-level rules ---------------------------------------------------------------------------


def _check_opset(model: Model) -> Iterator[Finding]:
    if model.opset < MIN_OPSET:
        yield Finding("error", MODEL, f"The model uses ONNX opset {model.opset}; TensorRT's explicit "
                      f"quantization needs opset {MIN_OPSET} or newer (per-channel Q/DQ): re-export with "
                      f"opset>={MIN_OPSET} or convert with onnx.version_converter.", "opset")


def _check_calibrated(model: Model) -> Iterator[Finding]:
    if model.metadata.get(UNCALIBRATED_KEY) == "1":
        yield Finding("error", MODEL, "the Q/DQ activation scales are placeholders (insert-qdq ran, calibrate did "
                      "not); run calibrate before building an INT8 engine.", "uncalibrated")


def _check_ops(graph: gs.Graph) -> Iterator[Finding]:
    for node in graph.nodes:
        domain = getattr(node, "domain", None) or ""
        if domain not in ("", "ai.onnx"):
            yield Finding("error", node.name, f"{node.op} is a custom-domain ({domain}) op TensorRT's ONNX "
                          "parser cannot build without a plugin; replace it with standard ONNX ops.", "unsupported-op")
        elif node.op in UNSUPPORTED_OPS:
            yield Finding("error", node.name, f"TensorRT has no implementation of {node.op}; rewrite it with "
                          "supported ops or keep it outside the engine.", "unsupported-op")
        elif node.op not in SUPPORTED_OPS:
            yield Finding("warning", node.name, f"{node.op} is not in TensorRT 10's ONNX operator table; the "
                          "parser may reject it: check with a GPU build.", "unknown-op")


def _check_resize(node: gs.Node) -> Iterator[Finding]:
    mode = _attr_str(node, "mode", "nearest")
    coordinate = _attr_str(node, "coordinate_transformation_mode", "half_pixel")
    nearest = _attr_str(node, "nearest_mode", "round_prefer_floor")
    problems = []
    if mode not in RESIZE_MODES:
        problems.append(f"mode {mode!r}")
    if coordinate not in RESIZE_COORDINATE_MODES:
        problems.append(f"coordinate_transformation_mode {coordinate!r}")
    if mode == "nearest" and nearest not in RESIZE_NEAREST_MODES:
        problems.append(f"nearest_mode {nearest!r}")
    if problems:
        yield Finding("error", node.name, f"TensorRT's Resize does not support {', '.join(problems)}; use "
                      "nearest or linear with a supported coordinate mode.", "resize-mode")


# -- Q/DQ parameter rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class _QParams:
    scale: np.ndarray | None  # None: not a constant
    zero_point: np.ndarray | None  # None: absent or not a constant
    zero_point_given: bool
    dtype: np.dtype | None  # the quantized integer type
    axis: int


def _qparams(node: gs.Node) -> _QParams:
    scale = _const(node.inputs[1]) if len(node.inputs) > 1 else None
    has_zp = len(node.inputs) > 2 and bool(node.inputs[2].name)
    zero_point = _const(node.inputs[2]) if has_zp else None
    if zero_point is not None:
        dtype = zero_point.dtype
    elif node.op == DQ and (data := _const(node.inputs[0])) is not None:
        dtype = data.dtype
    elif node.op == Q and not has_zp and "output_dtype" not in node.attrs:
        dtype = np.dtype(np.uint8)  # ONNX: QuantizeLinear without a zero point outputs uint8
    else:
        dtype = None
    return _QParams(scale, zero_point, has_zp, dtype, int(node.attrs.get("axis", 1)))


def _check_quantizer(node: gs.Node) -> Iterator[Finding]:
    """Rules on one quantizer: a QuantizeLinear, or a DequantizeLinear of stored integers."""
    params = _qparams(node)
    yield from _check_scale(node, params)
    yield from _check_dtype(node, params)
    if params.zero_point is not None and np.any(params.zero_point != 0):
        values = np.unique(params.zero_point)
        shown = ", ".join(str(v) for v in values[:3]) + (", ..." if values.size > 3 else "")
        yield Finding("error", node.name, f"zero point is {shown} (asymmetric quantization); TensorRT only runs "
                      "symmetric INT8 with zero point 0: quantize symmetrically (insert-qdq{profile=trt}, or "
                      "ORT ActivationSymmetric/WeightSymmetric).", "zero-point")
    elif params.zero_point_given and params.zero_point is None:
        yield Finding("error", node.name, "the zero point is computed at run time; TensorRT needs a constant "
                      "zero point of 0: make it an initializer.", "zero-point")
    if int(node.attrs.get("block_size", 0) or 0) > 0:
        yield Finding("warning", node.name, "block quantization is only supported by TensorRT for INT4 "
                      "weight-only GEMM; use per-tensor or per-channel INT8 scales.", "block-quantization")
    if params.scale is not None and params.scale.size > 1:
        yield from _check_per_channel(node, params)


def _check_scale(node: gs.Node, params: _QParams) -> Iterator[Finding]:
    if params.scale is None:
        yield Finding("error", node.name, "the scale is not a constant; TensorRT needs build-time scales: "
                      "make it an initializer.", "scale-not-constant")
        return
    if not np.all(np.isfinite(params.scale)) or np.any(params.scale <= 0):
        yield Finding("error", node.name, "the scale has zero, negative or non-finite values; TensorRT needs "
                      "positive finite scales: recalibrate.", "bad-scale")
    # float16 scales belong to float16 Q inputs / DQ outputs (opset 19, strongly typed builds).
    if params.scale.dtype not in (np.float32, np.float16):
        yield Finding("warning", node.name, f"the scale is {params.scale.dtype}; TensorRT expects float32 "
                      "(or float16) scales: store them as float32.", "scale-dtype")


def _check_dtype(node: gs.Node, params: _QParams) -> Iterator[Finding]:
    if params.dtype is None or params.dtype == np.int8:
        return
    if params.dtype == np.uint8:
        yield Finding("error", node.name, "quantizes to uint8; TensorRT only has signed INT8 Q/DQ: quantize to "
                      "int8 with zero point 0 (ORT: activation_type=QInt8, ActivationSymmetric).", "unsigned")
    elif params.dtype == np.int32:
        where = ("the Conv bias" if any(c.op in WEIGHTED_OPS and _input_index(c, node.outputs[0]) == 2
                                        for c in node.outputs[0].outputs) else "an int32 tensor")
        yield Finding("error", node.name, f"dequantizes {where} from int32; TensorRT cannot dequantize int32 and "
                      "keeps biases in float: leave the bias unquantized (ORT: QuantizeBias=False).",
                      "int32-dequantize")
    else:
        yield Finding("warning", node.name, f"quantizes to {params.dtype}; the TensorRT backend's int8 "
                      "precision expects int8 Q/DQ.", "not-int8")


def _check_per_channel(node: gs.Node, params: _QParams) -> Iterator[Finding]:
    data = node.inputs[0]
    weight = _const(data) if node.op == Q else _quantized_constant(node)
    if weight is None:
        yield Finding("error", node.name, f"per-channel scales ({params.scale.size}) on an activation; TensorRT "
                      "only quantizes activations per tensor: use one scale.", "per-channel-activation")
        return
    axis = params.axis % weight.ndim if weight.ndim else 0
    for consumer, index in _weight_consumers(node):
        expected = 1 if consumer.op == "ConvTranspose" else 0
        if consumer.op in ("Conv", "ConvTranspose") and index == 1:
            if axis != expected:
                yield Finding("error", node.name, f"per-channel weight scales use axis {params.axis}; TensorRT "
                              f"needs the output-channel axis {expected} for {consumer.op} weights: set axis="
                              f"{expected}.", "per-channel-axis")
            elif params.scale.size != weight.shape[expected]:
                yield Finding("error", node.name, f"{params.scale.size} weight scales for {weight.shape[expected]} "
                              "output channels; give one scale per output channel.", "per-channel-axis")


# -- Q/DQ structure rules ------------------------------------------------------------------------


def _check_q_feeds_dq(node: gs.Node) -> Iterator[Finding]:
    others = sorted({c.op for c in node.outputs[0].outputs if c.op != DQ})
    if others:
        yield Finding("error", node.name, f"the QuantizeLinear output feeds {', '.join(others)} instead of a "
                      "DequantizeLinear; TensorRT needs every Q followed by a DQ.", "q-without-dq")


def _check_pair(quantize: gs.Node, dequantize: gs.Node) -> Iterator[Finding]:
    q, dq = _qparams(quantize), _qparams(dequantize)
    same_scale = q.scale is not None and dq.scale is not None and q.scale.shape == dq.scale.shape and \
        np.allclose(q.scale, dq.scale, rtol=_SCALE_RTOL, atol=0)
    q_zp = q.zero_point if q.zero_point is not None else np.zeros(1, np.int8)
    dq_zp = dq.zero_point if dq.zero_point is not None else np.zeros(1, np.int8)
    same_axis = q.scale is None or q.scale.size == 1 or q.axis == dq.axis
    if not (same_scale and np.array_equal(np.ravel(q_zp), np.ravel(dq_zp)) and same_axis):
        yield Finding("error", dequantize.name, f"this DequantizeLinear does not undo its QuantizeLinear "
                      f"{quantize.name} (different scale, zero point or axis); TensorRT fuses only matching "
                      "pairs: give both the same parameters.", "pair-mismatch")


def _check_weighted(node: gs.Node) -> Iterator[Finding]:
    data_dq = _is_dq(node.inputs[0])
    weight_dq = len(node.inputs) > 1 and _is_dq(node.inputs[1])
    if weight_dq and _quantized_constant(producer(node.inputs[1])) is None:
        yield Finding("warning", node.name, f"the {node.op} weight is dequantized from a computed tensor; "
                      "TensorRT fuses only constant weights: quantize the initializer itself.", "weight-not-constant")
    if data_dq and not weight_dq:
        yield Finding("warning", node.name, f"the {node.op} input is quantized but its weight is not, so TensorRT "
                      "runs it in float and the input Q/DQ cannot fuse: quantize the weight too.", "half-quantized")
    elif weight_dq and not data_dq:
        upstream = _dq_behind_data_movement(node.inputs[0])
        if upstream:
            yield Finding("warning", node.name, f"the input DequantizeLinear reaches this {node.op} only through "
                          f"{upstream}; TensorRT must move it to fuse: place the Q/DQ directly before the "
                          f"{node.op}.", "not-adjacent")
        else:
            yield Finding("warning", node.name, f"the {node.op} weight is quantized but its input is not, so "
                          "TensorRT runs it in float and the weight DQ cannot fuse: quantize the input too.",
                          "half-quantized")


def _check_concat(node: gs.Node) -> Iterator[Finding]:
    quantized = [t for t in node.inputs if _is_dq(t)]
    if not quantized:
        return
    if len(quantized) < len(node.inputs):
        yield Finding("warning", node.name, f"{len(quantized)} of {len(node.inputs)} Concat inputs are quantized; "
                      "TensorRT then concatenates in float and their DQs cannot fuse: quantize all inputs or "
                      "none.", "concat-mixed")
    scales = [_qparams(producer(t)).scale for t in quantized]
    known = [float(np.ravel(s)[0]) for s in scales if s is not None and s.size == 1]
    if len(known) > 1 and not np.allclose(known, known[0], rtol=_SCALE_RTOL, atol=0):
        shown = ", ".join(f"{s:.6g}" for s in known)
        yield Finding("warning", node.name, f"Concat inputs have different scales ({shown}); TensorRT concatenates "
                      "INT8 only with one shared scale: give every input (and the output Q) the same scale.",
                      "concat-scales")


# -- graph helpers -------------------------------------------------------------------------------


def _const(tensor: gs.Tensor) -> np.ndarray | None:
    value = constant_value(tensor)
    return None if value is None else np.asarray(value)


def _is_dq(tensor: gs.Tensor) -> bool:
    node = producer(tensor)
    return node is not None and node.op == DQ


def _from_quantize(node: gs.Node) -> bool:
    source = producer(node.inputs[0])
    return source is not None and source.op == Q


def _quantized_constant(dq: gs.Node | None) -> np.ndarray | None:
    """The constant a DequantizeLinear restores: its stored integers, or the float input of its Q."""
    if dq is None or dq.op != DQ:
        return None
    stored = _const(dq.inputs[0])
    if stored is not None:
        return stored
    source = producer(dq.inputs[0])
    return _const(source.inputs[0]) if source is not None and source.op == Q else None


def _weight_consumers(quantizer: gs.Node) -> Iterator[tuple[gs.Node, int]]:
    """(op, input index) of every op fed by this quantizer's DequantizeLinear(s)."""
    dqs = [quantizer] if quantizer.op == DQ else [c for c in quantizer.outputs[0].outputs if c.op == DQ]
    for dq in dqs:
        for consumer in dq.outputs[0].outputs:
            yield consumer, _input_index(consumer, dq.outputs[0])


def _input_index(node: gs.Node, tensor: gs.Tensor) -> int:
    for index, item in enumerate(node.inputs):
        if item is tensor:
            return index
    return -1


def _dq_behind_data_movement(tensor: gs.Tensor, hops: int = 4) -> str | None:
    """'Reshape' / 'MaxPool -> Reshape' when a DQ reaches `tensor` through data-movement ops only."""
    path: list[str] = []
    node = producer(tensor)
    while node is not None and node.op in DATA_MOVEMENT_OPS and len(path) < hops:
        path.append(node.op)
        source = node.inputs[0]
        if _is_dq(source):
            return " -> ".join(reversed(path))
        node = producer(source)
    return None


def _attr_str(node: gs.Node, name: str, default: str) -> str:
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)
