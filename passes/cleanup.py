"""cleanup: constant folding, shape folding, Identity/no-op removal and dead-node removal.

Shape computations (Shape -> Gather -> ...) become constants so Reshape/Split/Resize are static.
Q/DQ nodes are never folded, so quantized weights stay quantized. Numerically equal within 1e-6
relative: folded subgraphs are evaluated by ONNX Runtime itself, ahead of time.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from yolograph.ir.graph_view import replace_all_uses
from yolograph.ir.model import Model
from yolograph.pipeline.passes import Contract, NoOptions, Pass, PassResult, register_pass

NO_OP_TYPES = ("Identity", "Dropout")
NEVER_FOLD = ("QuantizeLinear", "DequantizeLinear")


@register_pass("cleanup")
class Cleanup(Pass):
    """Fold constants and shapes, drop Identity/Dropout and dead nodes."""

    Options = NoOptions
    contract = Contract.tolerance(1e-6)

    def run(self, model: Model) -> PassResult:
        before = _node_signature(model.graph)
        removed_no_ops = remove_no_ops(model.graph)
        graph = _with_inferred_shapes(model)
        graph.fold_constants(fold_shapes=True, should_exclude_node=lambda node: node.op in NEVER_FOLD)
        graph.cleanup(remove_unused_graph_inputs=False)
        graph.toposort()
        model.graph = graph
        after = _node_signature(graph)
        return PassResult(
            changed=before != after,
            stats={"nodes_removed": len(before) - len(after), "no_ops_removed": removed_no_ops},
        )


def remove_no_ops(graph: gs.Graph) -> int:
    """Bypass Identity/Dropout nodes (keeping graph output names)."""
    removed = 0
    for node in [n for n in graph.nodes if n.op in NO_OP_TYPES]:
        source, output = node.inputs[0], node.outputs[0]
        # An Identity from a graph input straight to a graph output is the only way to alias them.
        # So is an Identity between two graph outputs: each keeps its name.
        if (output in graph.outputs and (source in graph.inputs or source in graph.outputs)) or any(
                t.outputs for t in node.outputs[1:]):
            continue
        replace_all_uses(graph, output, source)
        node.outputs.clear()
        removed += 1
    return removed


def _with_inferred_shapes(model: Model) -> gs.Graph:
    """Shape folding needs tensor shapes on the graph: round-trip through ONNX shape inference."""
    proto = model.to_onnx()
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # shape folding is best-effort; constant folding still runs
        pass
    return gs.import_onnx(proto)


def _node_signature(graph: gs.Graph) -> list[tuple[str, str]]:
    return [(n.op, n.name) for n in graph.nodes]
