"""A networkx view of the graph for analyses (paths, producers/consumers, dependency groups).

Nodes are op names; each edge producer -> consumer carries the tensor name as its key and in
`tensor`. Graph inputs and constants are not nodes: analyses ask the gs graph for those.
"""

from __future__ import annotations

import networkx as nx
import onnx_graphsurgeon as gs


def build_nx_view(graph: gs.Graph) -> nx.MultiDiGraph:
    view = nx.MultiDiGraph()
    for node in graph.nodes:
        view.add_node(node.name, op=node.op)
    for node in graph.nodes:
        for tensor in node.outputs:
            for consumer in tensor.outputs:
                view.add_edge(node.name, consumer.name, key=tensor.name, tensor=tensor.name)
    return view


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that computes `tensor`, or None for graph inputs and constants."""
    return tensor.inputs[0] if tensor.inputs else None


def consumers(tensor: gs.Tensor) -> list[gs.Node]:
    return list(tensor.outputs)


def constant_value(tensor: gs.Tensor):
    """The numpy value of a constant tensor (initializer or Constant-node output), else None."""
    if isinstance(tensor, gs.Constant):
        return tensor.values
    node = producer(tensor)
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        value = node.attrs["value"]
        return value.values if isinstance(value, gs.Constant) else value
    return None


def replace_all_uses(graph: gs.Graph, old: gs.Variable, new: gs.Tensor) -> None:
    """Make every consumer of `old` read `new` instead (LLVM's replaceAllUsesWith).

    When `old` is a graph output, `new` takes its place and its name, so the model's output
    names never change.
    """
    for consumer in list(old.outputs):
        for index, tensor in enumerate(consumer.inputs):
            if tensor is old:
                consumer.inputs[index] = new
    if old in graph.outputs and (new in graph.outputs or new in graph.inputs or not isinstance(new, gs.Variable)):
        # `new` already has a name the model exposes (or is a constant): renaming it would change
        # another input's or output's name, so `old` stays an output, computed as Identity(new).
        old.inputs.clear()
        graph.nodes.append(gs.Node("Identity", f"{old.name}/alias", inputs=[new], outputs=[old]))
        return
    if old in graph.outputs:
        position = graph.outputs.index(old)
        new.dtype = new.dtype if new.dtype is not None else old.dtype  # a graph output needs its type
        new.shape = new.shape if new.shape is not None else old.shape
        old.name, new.name = f"{old.name}.replaced", old.name
        graph.outputs[position] = new
