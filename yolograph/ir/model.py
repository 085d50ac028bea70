"""The IR: a YOLO model as an onnx-graphsurgeon graph plus the facts passes need.

`Model` is deliberately thin. The graph is an ordinary `gs.Graph` that passes edit in place;
everything derived from it (static shapes, the networkx view, the YOLO facts) is cached and
dropped by `invalidate()`, which the pass manager calls whenever a pass reports a change.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from yolograph.errors import ModelError

if TYPE_CHECKING:
    import networkx as nx

    from yolograph.ir.yolo_facts import YoloFacts


@dataclass(frozen=True)
class TensorInfo:
    """Name, static shape and dtype of a graph input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{self.name}: {np.dtype(self.dtype).name}[{','.join(map(str, self.shape))}]"


class Model:
    """A static-shape ONNX model held as an editable onnx-graphsurgeon graph.

    Passes mutate `model.graph` directly. Derived views are cached: call `invalidate()` after
    editing the graph outside the pass manager.
    """

    def __init__(
        self,
        graph: gs.Graph,
        *,
        metadata: dict[str, str] | None = None,
        ir_version: int = 8,
        source: str | None = None,
    ) -> None:
        self.graph = graph
        self.metadata: dict[str, str] = dict(metadata or {})
        self.ir_version = ir_version
        self.source = source
        _name_unnamed_nodes(graph)

    # -- construction and serialization -------------------------------------------------------

    @classmethod
    def from_onnx(cls, proto: onnx.ModelProto, source: str | None = None) -> Model:
        """Wrap an ONNX model; raises ModelError when it is not a static-shape default-domain model."""
        try:
            graph = gs.import_onnx(proto)
        except Exception as exc:  # graphsurgeon raises many types on malformed graphs
            raise ModelError(f"{source or 'The model'} is not a valid ONNX graph ({exc}).") from exc
        metadata = {p.key: p.value for p in proto.metadata_props}
        model = cls(graph, metadata=metadata, ir_version=proto.ir_version, source=source)
        model._check_static_io()
        return model

    def to_onnx(self) -> onnx.ModelProto:
        """Export to an ONNX ModelProto (topologically sorted, metadata kept)."""
        graph = self.graph
        graph.toposort()
        proto = gs.export_onnx(graph, do_type_check=False)
        proto.ir_version = min(self.ir_version, onnx.IR_VERSION) if self.ir_version else 8
        del proto.metadata_props[:]
        for key, value in self.metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "yolograph"
        return proto

    def serialize(self) -> bytes:
        return self.to_onnx().SerializeToString()

    def copy(self) -> Model:
        """A deep copy that shares nothing mutable with this model."""
        clone = Model(
            self.graph.copy(),
            metadata=dict(self.metadata),
            ir_version=self.ir_version,
            source=self.source,
        )
        # graph.copy() shares Constant values; copy them so a pass cannot edit the original's weights.
        for tensor in clone.graph.tensors().values():
            if isinstance(tensor, gs.Constant):
                tensor.values = np.array(tensor.values, copy=True)
        return clone

    # -- cached views ---------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Drop every cached view; call after editing the graph."""
        for name in ("facts", "nx_graph", "_shape_map"):
            self.__dict__.pop(name, None)

    @cached_property
    def facts(self) -> YoloFacts:
        """YOLO facts read from metadata and graph structure (task, stride, classes, head, decode)."""
        from yolograph.ir.yolo_facts import read_yolo_facts

        return read_yolo_facts(self)

    @cached_property
    def nx_graph(self) -> nx.MultiDiGraph:
        """A networkx view: one node per op (by name), edges producer -> consumer keyed by tensor."""
        from yolograph.ir.graph_view import build_nx_view

        return build_nx_view(self.graph)

    @cached_property
    def _shape_map(self) -> dict[str, tuple[int, ...]]:
        from yolograph.ir.shapes import infer_static_shapes

        return infer_static_shapes(self)

    def shape_of(self, tensor_name: str) -> tuple[int, ...] | None:
        """Static shape of any tensor in the graph, or None when it cannot be inferred."""
        return self._shape_map.get(tensor_name)

    # -- simple facts ---------------------------------------------------------------------------

    @property
    def opset(self) -> int:
        return int(self.graph.opset)

    @property
    def inputs(self) -> list[TensorInfo]:
        return [_tensor_info(t) for t in self.graph.inputs]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [_tensor_info(t, self.shape_of(t.name)) for t in self.graph.outputs]

    def node(self, name: str) -> gs.Node:
        for node in self.graph.nodes:
            if node.name == name:
                return node
        raise KeyError(f"No node named {name!r}.")

    def nodes_by_op(self, op: str) -> list[gs.Node]:
        return [n for n in self.graph.nodes if n.op == op]

    def op_histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.graph.nodes:
            counts[node.op] = counts.get(node.op, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def __repr__(self) -> str:
        return f"Model({self.source or 'in-memory'}, {len(self.graph.nodes)} nodes, opset {self.opset})"

    def _check_static_io(self) -> None:
        for tensor in self.graph.inputs:
            shape = tensor.shape
            if shape is None or any(not isinstance(d, int) or d <= 0 for d in shape):
                raise ModelError(
                    f"Input {tensor.name!r} has a dynamic or unknown shape {shape}; yolograph needs "
                    "static shapes. Re-export the model with a fixed size (ultralytics: "
                    "export(format='onnx', dynamic=False, imgsz=640))."
                )


def _tensor_info(tensor: gs.Variable, shape: tuple[int, ...] | None = None) -> TensorInfo:
    dims = shape if shape is not None else tuple(tensor.shape or ())
    dtype = tensor.dtype if tensor.dtype is not None else np.float32
    if not isinstance(dtype, np.dtype):
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype)) if isinstance(dtype, int) else np.dtype(dtype)
    return TensorInfo(tensor.name, tuple(int(d) if isinstance(d, (int, np.integer)) else -1 for d in dims), dtype)


def _name_unnamed_nodes(graph: gs.Graph) -> None:
    """Give every node a unique name: passes, reports and the networkx view address nodes by name."""
    seen: set[str] = set()
    for index, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            base = node.name or f"{node.op}_{index}"
            candidate, suffix = base, 1
            while candidate in seen:
                candidate, suffix = f"{base}_{suffix}", suffix + 1
            node.name = candidate
        seen.add(node.name)

