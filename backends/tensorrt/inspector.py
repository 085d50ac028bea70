"""Which layers did TensorRT actually run in INT8? Parse the engine inspector's JSON and check.

An engine built with ``ProfilingVerbosity.DETAILED`` describes each fused layer: its name (the
ONNX node names joined by `` + ``), ``LayerType``, input/output tensors with ``Format/Datatype``
(e.g. "Thirty-two wide channel vectorized row major Int8 format", "Half", "Float"; TensorRT 11 splits
it into ``Format`` and ``DataType``), ``Weights.Type`` for weighted layers, the tactic, and in
``Metadata`` the ONNX layers it came from (``[ONNX Layer: name]`` entries, separated by \\x1e or
\\x1f). `parse_engine_information` reads that into `EngineLayer`s; `int8_report` compares them with
the Q/DQ graph the engine was built from:

- every Conv whose input and weight come from DequantizeLinear must sit in an engine layer with an
  INT8 input: one that does not means a Q/DQ pair did not fuse, a bug in our Q/DQ placement;
- a layer built only from DequantizeLinear nodes (a DQ TensorRT could not fuse into its consumer)
  is the same bug; a lone QuantizeLinear layer is only expected on a float graph input;
- Convs the graph leaves in float (the profile keeps them float) are listed, not judged.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from yolograph.errors import BackendError
from yolograph.ir.graph_view import constant_value, producer
from yolograph.ir.model import Model

_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]\x1e\x1f]*)\]")
# First match wins: "Int8" must be tested before the "Float" in "... Int8 format" variants and
# before a bare "8"; "Half" before "Float".
_TYPE_PATTERNS = (
    ("int8", re.compile(r"\bint8\b", re.I)),
    ("fp8", re.compile(r"\bfp8\b|\bfloat8", re.I)),
    ("int4", re.compile(r"\bint4\b", re.I)),
    ("bf16", re.compile(r"\bbf16\b|\bbfloat16\b", re.I)),
    ("fp16", re.compile(r"\bhalf\b|\bfp16\b|\bfloat16\b", re.I)),
    ("fp32", re.compile(r"\bfloat\b|\bfp32\b|\bfloat32\b", re.I)),
    ("int32", re.compile(r"\bint32\b", re.I)),
    ("int64", re.compile(r"\bint64\b", re.I)),
    ("bool", re.compile(r"\bbool\b", re.I)),
)


@dataclass(frozen=True)
class EngineLayer:
    """One layer of a built engine, as the inspector describes it."""

    name: str
    layer_type: str
    onnx_nodes: tuple[str, ...]
    input_types: tuple[str, ...]  # int8 | fp16 | fp32 | bf16 | fp8 | int32 | int64 | bool | unknown
    output_types: tuple[str, ...]
    weights_type: str | None = None
    tactic: str | None = None

    @property
    def is_convolution(self) -> bool:
        return "conv" in self.layer_type.lower()

    @property
    def compute_type(self) -> str:
        """The precision the layer's data input arrives in: what its kernel computes in."""
        return self.input_types[0] if self.input_types else "unknown"


@dataclass
class Int8Report:
    """How an engine realised the INT8 the Q/DQ graph asked for (see the module docstring)."""

    expected_int8: list[str] = field(default_factory=list)
    ran_int8: list[str] = field(default_factory=list)
    not_int8: list[dict[str, str]] = field(default_factory=list)  # node, layer, layer_type, compute_type
    not_found: list[str] = field(default_factory=list)
    float_convs: list[str] = field(default_factory=list)
    unfused_dequantize: list[dict[str, Any]] = field(default_factory=list)  # layer, onnx_nodes
    unfused_quantize: list[dict[str, Any]] = field(default_factory=list)  # not on a graph input
    layer_types: dict[str, int] = field(default_factory=dict)  # compute type -> layer count

    @property
    def ok(self) -> bool:
        return not (self.not_int8 or self.not_found or self.unfused_dequantize)

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        lines = [f"INT8 Convs: {len(self.ran_int8)} of {len(self.expected_int8)} the Q/DQ graph quantizes "
                 f"ran in INT8; {len(self.float_convs)} Conv(s) kept in float by the graph."]
        for item in self.not_int8:
            lines.append(f"  NOT INT8: {item['node']} ran as {item['compute_type']} in layer {item['layer']!r} "
                         f"({item['layer_type']}): its Q/DQ did not fuse.")
        for name in self.not_found:
            lines.append(f"  NOT FOUND: {name} is in no engine layer's ONNX metadata.")
        for item in self.unfused_dequantize:
            lines.append(f"  UNFUSED DQ: layer {item['layer']!r} only dequantizes ({', '.join(item['onnx_nodes'])}).")
        for item in self.unfused_quantize:
            lines.append(f"  lone Q: layer {item['layer']!r} only quantizes ({', '.join(item['onnx_nodes'])}).")
        lines.append("layers by compute type: " + ", ".join(f"{k} {v}" for k, v in sorted(self.layer_types.items())))
        return "\n".join(lines)


def parse_engine_information(info: str | dict) -> list[EngineLayer]:
    """Layers of `IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`."""
    data = json.loads(info) if isinstance(info, str) else info
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise BackendError("The engine inspector output has no 'Layers' list; inspect an engine built by yolograph.")
    if layers and all(isinstance(layer, str) for layer in layers):
        raise BackendError("The engine only records layer names; rebuild it with ProfilingVerbosity.DETAILED "
                           "(yolograph always sets it) to see per-layer precision.")
    return [_parse_layer(layer) for layer in layers if isinstance(layer, dict)]


def _parse_layer(layer: dict) -> EngineLayer:
    name = str(layer.get("Name", ""))
    weights = layer.get("Weights")
    return EngineLayer(
        name=name,
        layer_type=str(layer.get("LayerType", "")),
        onnx_nodes=onnx_origins(name, layer.get("Metadata")),
        input_types=tuple(tensor_type(t) for t in layer.get("Inputs", []) if isinstance(t, dict)),
        output_types=tuple(tensor_type(t) for t in layer.get("Outputs", []) if isinstance(t, dict)),
        weights_type=normalize_type(str(weights.get("Type", ""))) if isinstance(weights, dict) else None,
        tactic=layer.get("TacticName"),
    )


def onnx_origins(name: str, metadata: Any) -> tuple[str, ...]:
    """ONNX node names a layer came from: its Metadata entries, else its name split at ' + '."""
    if isinstance(metadata, str):
        found = [m.strip() for m in _ONNX_LAYER.findall(metadata) if m.strip()]
        if found:
            return tuple(dict.fromkeys(found))
    parts: list[str] = []
    for part in name.split(" + "):
        inner = re.fullmatch(r"PWN\((.*)\)", part.strip())
        parts.extend(p.strip() for p in (inner.group(1).split(",") if inner else [part]))
    return tuple(dict.fromkeys(p for p in parts if p))


def tensor_type(tensor: dict) -> str:
    """Normalised data type of one inspector tensor entry (TensorRT 10 and 11 spellings)."""
    text = tensor.get("Format/Datatype") or tensor.get("DataType") or tensor.get("Datatype") or tensor.get("Format")
    return normalize_type(str(text or ""))


def normalize_type(text: str) -> str:
    for label, pattern in _TYPE_PATTERNS:
        if pattern.search(text):
            return label
    return "unknown"


def int8_report(model: Model, layers: list[EngineLayer]) -> Int8Report:
    """Compare the Q/DQ graph `model` (as built) with the engine `layers` (see the module docstring)."""
    report = Int8Report()
    ops = {node.name: node.op for node in model.graph.nodes}
    graph_inputs = {t.name for t in model.graph.inputs}
    by_node: dict[str, list[EngineLayer]] = {}
    for layer in layers:
        for origin in layer.onnx_nodes:
            by_node.setdefault(origin, []).append(layer)
    for conv in model.nodes_by_op("Conv"):
        if not _quantized_conv(conv):
            report.float_convs.append(conv.name)
            continue
        report.expected_int8.append(conv.name)
        candidates = by_node.get(conv.name, [])
        if not candidates:
            report.not_found.append(conv.name)
            continue
        layer = next((c for c in candidates if c.is_convolution), candidates[0])
        if layer.compute_type == "int8":
            report.ran_int8.append(conv.name)
        else:
            report.not_int8.append({"node": conv.name, "layer": layer.name, "layer_type": layer.layer_type,
                                    "compute_type": layer.compute_type})
    for layer in layers:
        origins = [o for o in layer.onnx_nodes if o in ops]
        if not origins or any(ops[o] not in ("QuantizeLinear", "DequantizeLinear") for o in origins):
            continue
        if layer.layer_type.lower() == "constant" or all(_of_constant(model.node(o)) for o in origins):
            continue  # weight quantization TensorRT folded into a constant: nothing runs
        entry = {"layer": layer.name, "onnx_nodes": origins}
        if any(ops[o] == "DequantizeLinear" for o in origins):
            report.unfused_dequantize.append(entry)
        elif not all(model.node(o).inputs[0].name in graph_inputs for o in origins):
            report.unfused_quantize.append(entry)
    report.layer_types = dict(Counter(layer.compute_type for layer in layers))
    return report


def _of_constant(node) -> bool:
    """A Q/DQ of a constant (weights): folded at build time, never a run-time layer of its own."""
    source = producer(node.inputs[0])
    if constant_value(node.inputs[0]) is not None:
        return True
    return source is not None and source.op == "QuantizeLinear" and constant_value(source.inputs[0]) is not None


def _quantized_conv(conv) -> bool:
    sources = [producer(t) for t in conv.inputs[:2]]
    return len(sources) == 2 and all(s is not None and s.op == "DequantizeLinear" for s in sources)
