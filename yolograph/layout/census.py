"""Where the transposes of a graph sit: next to an NCHW-only op, at the model's I/O, or elsewhere.

A transpose is *around an NCHW op* when the tensor it reads comes from a Conv/MaxPool-like op, or
every consumer of its output is one, looking through Q/DQ (a transpose outside a Q/DQ pair is
still directly around the quantized op). It is an *I/O transpose* when no NCHW op or other
transpose lies between it and a graph input (preprocessing) or a graph output (restoring the
output's layout). Anything else sits between two layout-agnostic ops and should not exist after
`to-nhwc`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import onnx_graphsurgeon as gs

from yolograph.layout.propagate import NCHW_OPS, QDQ_OPS


@dataclass(frozen=True)
class TransposeCensus:
    total: int
    around_nchw_ops: int
    io: int
    elsewhere: int
    nchw_ops: int
    elsewhere_names: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return asdict(self)


def transpose_census(graph: gs.Graph, extra_nchw_ops: frozenset[str] = frozenset()) -> TransposeCensus:
    """Classify every Transpose; `extra_nchw_ops` are op types the conversion kept NCHW on purpose."""
    nchw_ops = NCHW_OPS | extra_nchw_ops
    transposes = [n for n in graph.nodes if n.op == "Transpose"]
    around = io = 0
    elsewhere: list[str] = []
    for node in transposes:
        if _reads_nchw_op(node, nchw_ops) or _feeds_only_nchw_ops(node, nchw_ops):
            around += 1
        elif _touches_io(graph, node, nchw_ops):
            io += 1
        else:
            elsewhere.append(node.name)
    nchw = sum(1 for n in graph.nodes if n.op in nchw_ops)
    return TransposeCensus(len(transposes), around, io, len(elsewhere), nchw, tuple(elsewhere))


def _reads_nchw_op(node: gs.Node, nchw_ops: frozenset[str]) -> bool:
    producer = _producer(node.inputs[0])
    while producer is not None and producer.op in QDQ_OPS:
        producer = _producer(producer.inputs[0])
    return producer is not None and producer.op in nchw_ops


def _feeds_only_nchw_ops(node: gs.Node, nchw_ops: frozenset[str]) -> bool:
    def consumers_ok(tensor: gs.Tensor) -> bool:
        if not tensor.outputs:
            return False
        for consumer in tensor.outputs:
            if consumer.op in QDQ_OPS:
                if not consumers_ok(consumer.outputs[0]):
                    return False
            elif consumer.op not in nchw_ops or consumer.inputs[0] is not tensor:
                return False
        return True

    return consumers_ok(node.outputs[0])


def _touches_io(graph: gs.Graph, node: gs.Node, nchw_ops: frozenset[str]) -> bool:
    return (_reaches(node.inputs[0], graph.inputs, nchw_ops, upward=True)
            or _reaches(node.outputs[0], graph.outputs, nchw_ops, upward=False))


def _reaches(start: gs.Tensor, ends: list[gs.Tensor], nchw_ops: frozenset[str], *, upward: bool) -> bool:
    """True when a graph input (upward) / output (downward) is reached with no NCHW op or Transpose on the way."""
    end_names = {t.name for t in ends}
    stack, seen, found = [start], set(), False
    while stack:
        tensor = stack.pop()
        if tensor.name in seen:
            continue
        seen.add(tensor.name)
        if tensor.name in end_names:
            found = True
            if upward:
                continue
        nodes = tensor.inputs if upward else tensor.outputs
        for node in nodes:
            if node.op in nchw_ops or node.op == "Transpose":
                return False
            stack.extend(t for t in (node.inputs if upward else node.outputs) if isinstance(t, gs.Variable))
    return found


def _producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None
