"""Physical channel removal: the graph edit that makes a selection real.

`remove_classes` slices Conv weights (output and input axes), biases, BatchNormalization parameters,
per-channel constants of elementwise ops, depthwise group counts, Split sizes and Resize sizes, so the
graph stays valid and runnable. Consumer convs can be given new weights first (reconstruction: see
`yolograph.pruning.reconstruction`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.analysis.channel_groups import (
    CHANNELWISE_UNARY,
    ELEMENTWISE_BINARY,
    ChannelAnalysis,
    split_sizes,
)
from yolograph.ir.graph_view import constant_value
from yolograph.ir.model import Model
from yolograph.pruning.errors import PruningError


@dataclass
class Removal:
    """What remove_classes did: per conv (kept, removed) output channels; per feature map the kept indices."""

    layers: dict[str, tuple[int, int]]
    kept: dict[str, np.ndarray]

    def then(self, later: Removal) -> Removal:
        """This removal followed by `later` (made on the model this one left), as one removal from the
        first model: kept indices compose, removed counts add up."""
        kept = dict(self.kept)
        for name, keep in later.kept.items():
            kept[name] = kept[name][keep] if name in kept else keep
        layers = dict(self.layers)
        for name, (now_kept, removed) in later.layers.items():
            layers[name] = (now_kept, layers.get(name, (0, 0))[1] + removed)
        return Removal(layers, kept)


def remove_classes(
    model: Model,
    analysis: ChannelAnalysis,
    removed: set[int],
    refit: Callable[[gs.Node, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray | None]] | None = None,
) -> Removal:
    """Physically remove the channel classes `removed` (see `Removal` for what comes back).

    `refit(conv, keep_in, removed_in)` may return a consumer conv's new (weight over kept inputs, bias)
    before its input channels are dropped (reconstruction); without it they are simply sliced.
    """
    graph = model.graph
    keep_of: dict[str, np.ndarray] = {}
    for name, atoms in analysis.tensor_atoms.items():
        gone = analysis.removed_positions(name, removed)
        if len(gone):
            keep_of[name] = np.setdiff1d(np.arange(len(atoms)), gone)
    report: dict[str, tuple[int, int]] = {}
    for node in list(graph.nodes):
        touched_inputs = [t for t in node.inputs if t.name in keep_of]
        touched_outputs = [t for t in node.outputs if t.name in keep_of]
        if not touched_inputs and not touched_outputs:
            continue
        if node.op == "Conv":
            _prune_conv(graph, node, keep_of, analysis, refit, report)
        elif node.op == "BatchNormalization":
            keep = keep_of[node.inputs[0].name]
            for index in range(1, 5):
                set_constant(graph, node, index, np.asarray(constant_value(node.inputs[index]))[keep])
        elif node.op == "Split":
            _prune_split(graph, node, keep_of, analysis)
        elif node.op == "Resize":
            _prune_resize(graph, node, keep_of)
        elif node.op == "Concat":
            pass  # its output's channel map is the concatenation of the (already sliced) inputs
        elif node.op in ELEMENTWISE_BINARY:
            _prune_elementwise_constants(graph, node, keep_of)
        elif not touched_inputs or node.op not in _PASS_THROUGH:
            raise PruningError(
                f"Internal error: removing channels would change those of {node.op} {node.name!r}, which the "
                "channel analysis should have blocked; please report this model."
            )
    for tensor in graph.tensors().values():
        # Stale static shapes would contradict the new channel counts; ONNX shape inference redoes them.
        if isinstance(tensor, gs.Variable) and tensor not in graph.inputs and tensor not in graph.outputs:
            tensor.shape = None
    graph.cleanup()
    model.invalidate()
    return Removal(report, keep_of)


# Ops whose channels line up with their input's and carry no parameters to slice (Resize is handled
# on its own: its sizes input names the channel count).
_PASS_THROUGH = CHANNELWISE_UNARY - {"Resize"}


def _prune_conv(graph, node, keep_of, analysis, refit, report) -> None:
    weight = np.asarray(constant_value(node.inputs[1]))
    bias = np.asarray(constant_value(node.inputs[2])) if len(node.inputs) > 2 else None
    source, out = node.inputs[0].name, node.outputs[0].name
    if int(node.attrs.get("group", 1)) != 1:  # depthwise: input and output channels go together
        keep = keep_of[source]
        weight, bias = weight[keep], (bias[keep] if bias is not None else None)
        node.attrs["group"] = len(keep)
        report[node.name] = (len(keep), len(analysis.tensor_atoms[out]) - len(keep))
    else:
        if source in keep_of:
            keep_in = keep_of[source]
            gone_in = np.setdiff1d(np.arange(weight.shape[1]), keep_in)
            if refit is not None:
                weight, bias = refit(node, keep_in, gone_in)
            else:
                weight = weight[:, keep_in]
        if out in keep_of:
            keep_out = keep_of[out]
            report[node.name] = (len(keep_out), weight.shape[0] - len(keep_out))
            weight = weight[keep_out]
            bias = bias[keep_out] if bias is not None else None
    set_constant(graph, node, 1, np.ascontiguousarray(weight))
    if bias is not None:
        if len(node.inputs) > 2:
            set_constant(graph, node, 2, np.ascontiguousarray(bias))
        else:
            node.inputs.append(gs.Constant(_unique_name(graph, f"{node.name}.bias"), np.ascontiguousarray(bias)))


def _prune_split(graph, node, keep_of, analysis) -> None:
    source = node.inputs[0].name
    sizes = split_sizes(node, len(analysis.tensor_atoms[source]))
    new_sizes = [len(keep_of[t.name]) if t.name in keep_of else size for t, size in zip(node.outputs, sizes)]
    if len(node.inputs) > 1 and node.inputs[1].name:
        set_constant(graph, node, 1, np.asarray(new_sizes, dtype=np.int64))
    elif "split" in node.attrs:
        node.attrs["split"] = new_sizes
    else:  # num_outputs (opset 18) or implicit even split: make the sizes explicit
        node.attrs.pop("num_outputs", None)
        constant = gs.Constant(_unique_name(graph, f"{node.name}.split"), np.asarray(new_sizes, dtype=np.int64))
        if graph.opset >= 13:
            node.inputs[1:] = [constant]
        else:
            node.attrs["split"] = new_sizes


def _prune_resize(graph, node, keep_of) -> None:
    if len(node.inputs) > 3 and node.inputs[3].name:
        sizes = constant_value(node.inputs[3])
        if sizes is None:
            raise PruningError(f"Resize {node.name!r} has run-time sizes, so its channel count cannot be updated.")
        sizes = np.asarray(sizes, dtype=np.int64).copy()
        sizes[1] = len(keep_of[node.outputs[0].name])
        set_constant(graph, node, 3, sizes)


def _prune_elementwise_constants(graph, node, keep_of) -> None:
    out = node.outputs[0].name
    if out not in keep_of:
        return
    keep = keep_of[out]
    for index, tensor in enumerate(node.inputs):
        value = constant_value(tensor)
        if value is None or np.ndim(value) < 3 or np.shape(value)[-3] == 1:
            continue
        set_constant(graph, node, index, np.take(np.asarray(value), keep, axis=np.ndim(value) - 3))


def set_constant(graph: gs.Graph, node: gs.Node, index: int, values: np.ndarray) -> None:
    """Give `node` input `index` new values without touching other readers of the same constant."""
    tensor = node.inputs[index]
    if isinstance(tensor, gs.Constant) and len(tensor.outputs) == 1:
        tensor.values = values
        return
    node.inputs[index] = gs.Constant(_unique_name(graph, f"{tensor.name or node.name}.pruned"), values)


def _unique_name(graph: gs.Graph, base: str) -> str:
    existing = graph.tensors()
    name, suffix = base, 1
    while name in existing:
        name, suffix = f"{base}_{suffix}", suffix + 1
    return name


