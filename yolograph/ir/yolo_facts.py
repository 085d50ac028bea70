"""YOLO facts read from a model's metadata and graph structure.

The head is found structurally, not by ultralytics names, so a renamed or modified YOLOv8 works:
the *final head convs* are the Convs with no Conv after them (other than the DFL conv, the 1x1
Conv fed by a Softmax); everything computed from them is the *decode* subgraph (DFL, box
decode, score sigmoid, final Concat), which quantization and pruning must leave alone.
The head's branches by role, the task, the class count and the row groups of each output are read
by `yolograph.ir.heads` (segment, pose, obb and classify heads too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import networkx as nx

from yolograph.ir.heads import HeadBranch, OutputGroup, read_head
from yolograph.ir.metadata import parse_imgsz, parse_names

if TYPE_CHECKING:
    from yolograph.ir.model import Model


@dataclass(frozen=True)
class YoloFacts:
    task: str | None = None
    stride: int | None = None
    imgsz: tuple[int, int] | None = None
    names: dict[int, str] = field(default_factory=dict)
    num_classes: int | None = None
    reg_max: int | None = None
    head_convs: tuple[str, ...] = ()
    head_nodes: frozenset[str] = frozenset()
    decode_nodes: frozenset[str] = frozenset()
    dfl_conv: str | None = None
    branches: tuple[HeadBranch, ...] = ()
    output_groups: tuple[OutputGroup, ...] = ()
    keypoint_shape: tuple[int, int] | None = None

    @property
    def is_detect(self) -> bool:
        """A detect-like head (detect, segment, pose, obb): box and score rows over anchors."""
        return bool(self.head_convs) and self.num_classes is not None and self.task != "classify"

    def branch(self, role: str) -> HeadBranch | None:
        return next((b for b in self.branches if b.role == role), None)

    def groups_of(self, output: str) -> list[OutputGroup]:
        return [g for g in self.output_groups if g.output == output]

    def summary(self) -> dict:
        return {
            "task": self.task,
            "stride": self.stride,
            "imgsz": list(self.imgsz) if self.imgsz else None,
            "num_classes": self.num_classes,
            "reg_max": self.reg_max,
            "head_convs": len(self.head_convs),
            "head_nodes": len(self.head_nodes),
            "decode_nodes": len(self.decode_nodes),
            "dfl_conv": self.dfl_conv,
            "class_names": len(self.names),
            "keypoint_shape": list(self.keypoint_shape) if self.keypoint_shape else None,
            "branches": [b.to_json() for b in self.branches],
            "output_groups": [g.to_json() for g in self.output_groups],
        }


def read_yolo_facts(model: Model) -> YoloFacts:
    meta = model.metadata
    names = parse_names(meta.get("names"))
    imgsz = parse_imgsz(meta.get("imgsz")) or _imgsz_from_input(model)
    view = model.nx_graph
    ops = nx.get_node_attributes(view, "op")
    dfl_conv = _find_dfl_conv(model)
    head_convs = _final_convs(view, ops, dfl_conv)
    decode = _decode_nodes(model, view, head_convs)
    head = read_head(model, head_convs, names) if head_convs else None
    num_classes = head.num_classes if head else None
    classify = head is not None and head.branch("classifier") is not None
    reg_max = None if classify else _reg_max(model, dfl_conv, decode)
    box = head.branch("box") if head else None
    if reg_max is None and box is not None and box.channels == 4:
        reg_max = 1  # no DFL: the box branch regresses the four distances directly (YOLO26)
    return YoloFacts(
        task=(head.task if head else None) or meta.get("task") or None,
        stride=int(meta["stride"]) if meta.get("stride", "").isdigit() else None,
        imgsz=imgsz,
        names=names or ({i: str(i) for i in range(num_classes)} if num_classes else {}),
        num_classes=num_classes,
        reg_max=reg_max,
        head_convs=tuple(head_convs),
        head_nodes=frozenset(_head_nodes(model, head_convs, decode)),
        decode_nodes=frozenset(decode),
        dfl_conv=dfl_conv,
        branches=head.branches if head else (),
        output_groups=head.groups if head else (),
        keypoint_shape=head.keypoint_shape if head else None,
    )


def _reg_max(model: Model, dfl_conv: str | None, decode: set[str]) -> int | None:
    """DFL bins: the DFL conv's input channels, else the size of the decode Softmax's axis."""
    if dfl_conv is not None:
        weight = model.node(dfl_conv).inputs[1]
        return int(weight.shape[1]) if weight.shape else None
    for name in decode:
        node = model.node(name)
        shape = model.shape_of(node.inputs[0].name) if node.op == "Softmax" else None
        if shape:
            return int(shape[node.attrs.get("axis", -1)])
    return None


def _imgsz_from_input(model: Model) -> tuple[int, int] | None:
    shape = model.inputs[0].shape if model.inputs else ()
    if len(shape) != 4:
        return None
    nhwc = model.metadata.get("yolograph.input_layout") == "NHWC"
    return (shape[1], shape[2]) if nhwc else (shape[2], shape[3])


LAYOUT_OPS = ("Transpose", "Reshape", "QuantizeLinear", "DequantizeLinear")


def _find_dfl_conv(model: Model) -> str | None:
    """The 1x1 Conv fed by a Softmax, possibly through layout ops (to-nhwc wraps convs in Transposes)."""
    for node in model.nodes_by_op("Conv"):
        tensor = node.inputs[0]
        while tensor.inputs and tensor.inputs[0].op in LAYOUT_OPS:
            tensor = tensor.inputs[0].inputs[0]
        if tensor.inputs and tensor.inputs[0].op == "Softmax":
            return node.name
    return None


def _final_convs(view: nx.MultiDiGraph, ops: dict[str, str], dfl_conv: str | None) -> list[str]:
    """Convs after which no Conv runs except the DFL conv: the head's last 1x1 convs."""
    conv_below: dict[str, bool] = {}
    for name in reversed(list(nx.topological_sort(view))):
        conv_below[name] = any(
            (ops[child] == "Conv" and child != dfl_conv) or conv_below[child] for child in view.successors(name)
        )
    return [n for n in nx.topological_sort(view) if ops[n] == "Conv" and n != dfl_conv and not conv_below[n]]


def _decode_nodes(model: Model, view: nx.MultiDiGraph, head_convs: list[str]) -> set[str]:
    decode: set[str] = set()
    for conv in head_convs:
        decode |= nx.descendants(view, conv)
    decode -= set(head_convs)
    # Constant nodes that feed only the decode belong to it too.
    for node in model.graph.nodes:
        successors = set(view.successors(node.name))
        if node.op == "Constant" and successors and successors <= decode:
            decode.add(node.name)
    return decode


def _head_nodes(model: Model, head_convs: list[str], decode: set[str]) -> set[str]:
    """Nodes of the Detect module: by the shared ultralytics module prefix when there is one."""
    prefixes = {_module_prefix(name) for name in head_convs}
    if len(prefixes) == 1 and None not in prefixes:
        prefix = prefixes.pop()
        return {n.name for n in model.graph.nodes if n.name.startswith(prefix)} | decode
    return set(head_convs) | decode


def _module_prefix(node_name: str) -> str | None:
    parts = node_name.split("/")
    if len(parts) > 2 and parts[1].startswith("model."):
        return f"/{parts[1]}/"
    return None
