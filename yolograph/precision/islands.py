"""Which nodes stay float32 in a float16 graph, and why: rules read off the graph and measurements.

Rules (each kept node is recorded with the first rule that keeps it):

- ``dfl-softmax``: the DFL's Softmax in the YOLO decode (a Softmax whose result reaches a Conv or
  MatMul, the expectation over the 16 bins) and everything computed from it in the decode. Its
  expectation times the stride is a box side in pixels; float16 has 11 significant bits.
- ``box-decode``: decode elementwise ops with a per-anchor float constant (the anchor grid, the
  per-anchor strides) and everything computed from them in the decode: coordinates up to the image
  size, where float16's spacing is 0.25-0.5 px.
- ``keep``: node names (fnmatch patterns) or op types the user names with ``keep=``.
- ``overflow``: a node whose output was measured above ``overflow`` in magnitude on the probe inputs
  (float16 saturates at 65504; the default limit leaves 4x headroom).
- ``qdq-scale``: a Q/DQ node whose scale float16 cannot hold to 1e-3 relative (subnormal or zero),
  with the DequantizeLinear nodes of its pair.
- ``decode``: the whole YOLO decode, added by the pass only when the measured per-group SQNR with the
  rules above is below the floor.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx
import numpy as np
import onnx_graphsurgeon as gs

from yolograph.ir.graph_view import constant_value, producer
from yolograph.ir.model import Model
from yolograph.precision.types import FLOAT16_TINY

ELEMENTWISE_OPS = frozenset({"Add", "Sub", "Mul", "Div"})
EXPECTATION_OPS = frozenset({"Conv", "MatMul"})
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"})
DEFAULT_OVERFLOW = 16384.0
_SCALE_RTOL = 1e-3


@dataclass(frozen=True)
class IslandRules:
    """Options of the float32-island rules (see the module docstring)."""

    decode_rules: bool = True  # dfl-softmax and box-decode
    keep: tuple[str, ...] = ()
    overflow: float = DEFAULT_OVERFLOW
    whole_decode: bool = False


def float32_islands(model: Model, rules: IslandRules, magnitudes: Mapping[str, float] | None = None) -> dict[str, str]:
    """Node name -> the rule that keeps it in float32."""
    kept: dict[str, str] = {}

    def add(names, reason: str) -> None:
        for name in names:
            kept.setdefault(name, reason)

    facts = model.facts
    if rules.decode_rules and facts.decode_nodes:
        add(dfl_softmax_nodes(model), "dfl-softmax")
        add(box_decode_nodes(model), "box-decode")
    if rules.whole_decode:
        add(sorted(facts.decode_nodes), "decode")
    add(kept_by_user(model, rules.keep), "keep")
    if magnitudes:
        add(overflowing_nodes(model, magnitudes, rules.overflow), "overflow")
    add(unrepresentable_qdq(model), "qdq-scale")
    return kept


def dfl_softmax_nodes(model: Model) -> list[str]:
    """Decode Softmax nodes that feed the DFL expectation, and the decode computed from them."""
    decode = model.facts.decode_nodes
    roots = [n.name for n in model.graph.nodes
             if n.op == "Softmax" and n.name in decode and _reaches_expectation(n)]
    return _with_decode_descendants(model, roots)


def box_decode_nodes(model: Model) -> list[str]:
    """Decode elementwise ops with a per-anchor float constant, and the decode computed from them."""
    decode = model.facts.decode_nodes
    roots = []
    for node in model.graph.nodes:
        if node.name not in decode or node.op not in ELEMENTWISE_OPS:
            continue
        for tensor in node.inputs:
            value = constant_value(tensor)
            if value is not None and np.asarray(value).dtype.kind == "f" and np.asarray(value).size > 1 \
                    and float(np.max(np.abs(value))) > 1.0:
                roots.append(node.name)
                break
    return _with_decode_descendants(model, roots)


def kept_by_user(model: Model, patterns: tuple[str, ...]) -> list[str]:
    """Nodes whose name matches a pattern (fnmatch) or whose op type is named."""
    if not patterns:
        return []
    return [n.name for n in model.graph.nodes
            if n.op in patterns or any(fnmatch.fnmatchcase(n.name, p) for p in patterns)]


def overflowing_nodes(model: Model, magnitudes: Mapping[str, float], limit: float) -> list[str]:
    """Producers of tensors measured above `limit` in magnitude."""
    return [n.name for n in model.graph.nodes
            if any(magnitudes.get(t.name, 0.0) > limit for t in n.outputs)]


def unrepresentable_qdq(model: Model) -> list[str]:
    """Q/DQ nodes whose constant scale float16 cannot hold, with the DQs of each such Q."""
    names: list[str] = []
    for node in model.graph.nodes:
        if node.op not in ("QuantizeLinear", "DequantizeLinear") or len(node.inputs) < 2:
            continue
        scale = constant_value(node.inputs[1])
        if scale is None or _fits_float16(np.asarray(scale, dtype=np.float64)):
            continue
        names.append(node.name)
        if node.op == "QuantizeLinear":
            names += [c.name for c in node.outputs[0].outputs if c.op == "DequantizeLinear"]
        elif (q := producer(node.inputs[0])) is not None and q.op == "QuantizeLinear":
            names.append(q.name)
    return names


def _fits_float16(values: np.ndarray) -> bool:
    magnitude = np.abs(values)
    if np.any(magnitude < FLOAT16_TINY) or np.any(magnitude > 65504.0):
        return False
    back = values.astype(np.float16).astype(np.float64)
    return bool(np.all(np.abs(back - values) <= _SCALE_RTOL * magnitude))


def _reaches_expectation(softmax: gs.Node, hops: int = 4) -> bool:
    frontier = list(softmax.outputs[0].outputs)
    for _ in range(hops):
        following = []
        for node in frontier:
            if node.op in EXPECTATION_OPS:
                return True
            if node.op in LAYOUT_OPS:
                following += list(node.outputs[0].outputs)
        frontier = following
    return False


def _with_decode_descendants(model: Model, roots: list[str]) -> list[str]:
    decode = model.facts.decode_nodes
    view = model.nx_graph
    found: list[str] = []
    seen: set[str] = set()
    for root in roots:
        for name in [root, *sorted(nx.descendants(view, root))]:
            if name in decode and name not in seen:
                seen.add(name)
                found.append(name)
    return found
