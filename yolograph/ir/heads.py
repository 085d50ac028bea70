"""The YOLO head read by structure: its branches by role and the row groups of each output tensor.

Ultralytics heads end in one final 1x1 Conv per branch and scale (box distribution `cv2`, class
logits `cv3`, and per task mask coefficients / keypoints / angle `cv4`), reshaped and concatenated over
the scales. A branch is therefore the set of final convs feeding one Concat (through layout and Q/DQ
ops); its role comes from what the decode does with it, never from node names:

- box: its values reach a Softmax (the DFL), or, without a DFL (YOLO26, reg_max 1), it has 4 channels
  and is sliced into distances;
- class logits: the first op after the branch is a Sigmoid, and no Cos/Sin follows (that is the angle);
- angle (obb): Cos/Sin follow it (the rotated box decode);
- keypoints (pose): sliced into x/y and a Sigmoid visibility;
- mask coefficients (segment): copied into the output untouched;
- prototypes (segment): a final conv with no Concat after it that makes a 4-D graph output;
- classifier (classify): the Gemm/MatMul before the output Softmax of a [batch, classes] output.

Output groups are the row ranges of each output tensor, in the layout Ultralytics writes
([4 box | classes | extra] on axis 1, anchors on axis 2), checked against the output's width; they are
what contracts, calibration and benchmarks judge separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx

if TYPE_CHECKING:
    from yolograph.ir.model import Model

LAYOUT_OPS = ("Transpose", "Reshape", "QuantizeLinear", "DequantizeLinear", "Identity", "Cast")

# Output group roles, and which are judged like coordinates (regressed values) or like scores (in [0,1]).
COORDINATE_ROLES = ("box", "mask_coefficients", "prototypes", "keypoint_xy", "angle")
SCORE_ROLES = ("scores", "keypoint_visibility", "class_probabilities")


@dataclass(frozen=True)
class HeadBranch:
    """One head branch: its role, the final convs (one per scale) or classifier node, and their width."""

    role: str  # box | class | mask_coefficients | keypoints | angle | prototypes | classifier | unknown
    nodes: tuple[str, ...]
    channels: int

    def to_json(self) -> dict:
        return {"role": self.role, "nodes": len(self.nodes), "channels": self.channels}


@dataclass(frozen=True)
class OutputGroup:
    """Rows `rows` (on `axis`; None = the whole tensor) of graph output `output`, judged as one group."""

    output: str
    role: str
    rows: tuple[int, ...] | None = None
    axis: int = 1
    anchor_wise: bool = False  # anchors on the last axis; measured where the model is confident

    @property
    def kind(self) -> str:
        return "score" if self.role in SCORE_ROLES else "coordinate" if self.role in COORDINATE_ROLES else "other"

    @property
    def label(self) -> str:
        return f"{self.output}:{self.role}"

    def take(self, array):
        """This group's part of `array` (the output tensor)."""
        if self.rows is None:
            return array
        import numpy as np

        rows = np.asarray(self.rows)
        if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
            index = [slice(None)] * array.ndim
            index[self.axis] = slice(int(rows[0]), int(rows[0]) + len(rows))
            return array[tuple(index)]
        return np.take(array, rows, axis=self.axis)

    def judged(self, array):
        """The values this group is judged on: its rows, an angle as the orientation (cos 2θ, sin 2θ).

        A rotated box is the same box turned by π, so θ and θ+π must compare equal: Ultralytics'
        angle range [-π/4, 3π/4) has both ends meaning one box, and an untrained head's saturated
        sigmoid flips between them at the slightest input change. The doubled-angle embedding is smooth
        and π-periodic; for a small error δ it differs by 2δ.
        """
        values = self.take(array)
        if self.role != "angle":
            return values
        import numpy as np

        doubled = 2.0 * values.astype(np.float64)
        return np.concatenate([np.cos(doubled), np.sin(doubled)], axis=self.axis).astype(np.float32)

    def to_json(self) -> dict:
        rows = None
        if self.rows is not None:
            rows = [min(self.rows), max(self.rows) + 1, len(self.rows)]
        return {"output": self.output, "role": self.role, "kind": self.kind, "axis": self.axis,
                "rows": rows, "anchor_wise": self.anchor_wise}


@dataclass(frozen=True)
class HeadStructure:
    task: str | None
    branches: tuple[HeadBranch, ...]
    num_classes: int | None
    keypoint_shape: tuple[int, int] | None
    groups: tuple[OutputGroup, ...]

    def branch(self, role: str) -> HeadBranch | None:
        return next((b for b in self.branches if b.role == role), None)


def read_head(model: Model, head_convs: list[str], names: dict[int, str]) -> HeadStructure:
    """Branches, task, class count and output groups of `model` (see the module docstring)."""
    meta_task = model.metadata.get("task") or None
    outputs = model.outputs
    if len(outputs) == 1 and len(outputs[0].shape) == 2:
        return _classify_head(model, head_convs, names, outputs[0].name)
    branches = _branches(model, head_convs)
    by_role = {b.role: b for b in branches}
    task = meta_task or _task_from_roles(by_role)
    class_branch = by_role.get("class")
    nc = len(names) if names else (class_branch.channels if class_branch else None)
    kpt = _keypoint_shape(model, by_role.get("keypoints")) if "keypoints" in by_role else None
    groups = _detect_groups(model, task, nc, by_role, kpt)
    if groups and names and class_branch and class_branch.channels != len(names):
        nc = class_branch.channels  # metadata names disagree with the head: trust the graph
        groups = _detect_groups(model, task, nc, by_role, kpt)
    if not groups and class_branch and nc != class_branch.channels:
        nc = class_branch.channels
        groups = _detect_groups(model, task, nc, by_role, kpt)
    if not class_branch and not names:
        nc = None
    return HeadStructure(task if (class_branch or meta_task) else None, tuple(branches), nc, kpt, tuple(groups))


def _classify_head(model: Model, head_convs: list[str], names: dict[int, str], output: str) -> HeadStructure:
    width = model.outputs[0].shape[1]
    classifier = [n.name for n in model.graph.nodes if n.op in ("Gemm", "MatMul")]
    nodes = tuple(classifier[-1:]) or tuple(head_convs[-1:])
    branch = HeadBranch("classifier", nodes, int(width))
    nc = len(names) if names and len(names) == width else int(width)
    task = model.metadata.get("task") or "classify"
    return HeadStructure(task, (branch,), nc, None, (OutputGroup(output, "class_probabilities"),))


def _branches(model: Model, head_convs: list[str]) -> list[HeadBranch]:
    view = model.nx_graph
    ops = nx.get_node_attributes(view, "op")
    keyed: dict[str, list[str]] = {}
    for conv in head_convs:
        keyed.setdefault(_branch_key(model, conv), []).append(conv)
    per_scale = _per_scale_slots(model, keyed)
    if per_scale:
        return per_scale
    graph_outputs = {t.name: t for t in model.graph.outputs}
    branches = []
    for key, convs in keyed.items():
        channels = _conv_channels(model, convs[0])
        below = {ops[n] for n in nx.descendants(view, key)}
        first = _first_compute_op(model, key)
        role = "unknown"
        if key == convs[0] and ops[key] == "Conv":  # no Concat after it
            if _feeds_4d_output(model, key, graph_outputs):
                role = "prototypes"
        elif "Softmax" in below:
            role = "box"
        elif "Cos" in below or "Sin" in below:
            role = "angle"
        elif first == "Sigmoid":
            role = "class"
        elif first is None:
            role = "mask_coefficients"
        elif channels == 4 and "Sigmoid" not in below:
            role = "box"  # no DFL (reg_max 1): distances sliced straight into the box decode
        elif "Sigmoid" in below:
            role = "keypoints"  # x/y decoded, visibility through a Sigmoid
        branches.append(HeadBranch(role, tuple(convs), channels))
    return branches


SLOT_ROLES = ("box", "class")


def _per_scale_slots(model: Model, keyed: dict[str, list[str]]) -> list[HeadBranch]:
    """Older exports concatenate [box, class] per scale first: one branch per Concat input slot then.

    Such a Concat mixes convs of different widths; the Detect module always writes the box
    distribution first and the class logits second, so the slot gives the role.
    """
    slots: dict[int, list[str]] = {}
    for key, convs in keyed.items():
        if len(convs) < 2 or len({_conv_channels(model, c) for c in convs}) < 2:
            return []
        for conv in convs:
            slots.setdefault(_slot_in(model, key, conv), []).append(conv)
    task_extra = EXTRA_ROLES.get(model.metadata.get("task", ""), "unknown")
    return [HeadBranch(SLOT_ROLES[slot] if slot < len(SLOT_ROLES) else task_extra, tuple(convs),
                       _conv_channels(model, convs[0])) for slot, convs in sorted(slots.items())]


def _slot_in(model: Model, concat: str, conv: str) -> int:
    node = model.node(concat)
    reached = nx.descendants(model.nx_graph, conv) | {conv}
    for index, tensor in enumerate(node.inputs):
        if tensor.inputs and tensor.inputs[0].name in reached:
            return index
    return len(node.inputs)


def _branch_key(model: Model, conv: str) -> str:
    """The Concat the conv's output reaches through layout ops, or the conv itself."""
    tensor = model.node(conv).outputs[0]
    while len(tensor.outputs) == 1:
        consumer = tensor.outputs[0]
        if consumer.op == "Concat":
            return consumer.name
        if consumer.op not in LAYOUT_OPS:
            break
        tensor = consumer.outputs[0]
    return conv


def _first_compute_op(model: Model, key: str) -> str | None:
    """The first non-layout op after `key`'s output; None when it only reaches the output Concat."""
    tensor = model.node(key).outputs[0]
    graph_outputs = {t.name for t in model.graph.outputs}
    while tensor.outputs:
        consumer = tensor.outputs[0]
        if consumer.op in LAYOUT_OPS:
            tensor = consumer.outputs[0]
            continue
        if consumer.op == "Concat" and consumer.outputs[0].name in graph_outputs:
            return None
        return consumer.op
    return None


def _conv_channels(model: Model, conv: str) -> int:
    node = model.node(conv)
    weight = node.inputs[1]
    shape = getattr(weight, "shape", None)
    if not shape and weight.inputs and weight.inputs[0].op == "DequantizeLinear":
        shape = weight.inputs[0].inputs[0].shape
    if shape:
        return int(shape[0])
    out = model.shape_of(node.outputs[0].name)
    return int(out[1]) if out and len(out) > 1 else 0


def _feeds_4d_output(model: Model, conv: str, graph_outputs: dict) -> bool:
    view = model.nx_graph
    reached = nx.descendants(view, conv) | {conv}
    for name in reached:
        for tensor in model.node(name).outputs:
            if tensor.name in graph_outputs:
                shape = model.shape_of(tensor.name) or tensor.shape or ()
                if len(shape) == 4:
                    return True
    return False


def _task_from_roles(by_role: dict[str, HeadBranch]) -> str | None:
    if "class" not in by_role:
        return None
    if "mask_coefficients" in by_role or "prototypes" in by_role:
        return "segment"
    if "keypoints" in by_role:
        return "pose"
    if "angle" in by_role:
        return "obb"
    return "detect"


def _keypoint_shape(model: Model, branch: HeadBranch) -> tuple[int, int]:
    """(keypoints, values per keypoint): metadata kpt_shape, else the decode's [b, k, d, anchors] Reshape."""
    import ast

    text = model.metadata.get("kpt_shape")
    if text:
        try:
            value = ast.literal_eval(text)
            if isinstance(value, (list, tuple)) and len(value) == 2:
                return (int(value[0]), int(value[1]))
        except (ValueError, SyntaxError):
            pass
    key = _branch_key(model, branch.nodes[0])
    for node_name in nx.descendants(model.nx_graph, key):
        node = model.node(node_name)
        shape = model.shape_of(node.outputs[0].name) if node.op == "Reshape" else None
        if shape and len(shape) == 4 and shape[1] * shape[2] == branch.channels:
            return (int(shape[1]), int(shape[2]))
    ndim = 3 if branch.channels % 3 == 0 else 2
    return (branch.channels // ndim, ndim)


EXTRA_ROLES = {"segment": "mask_coefficients", "pose": "keypoints", "obb": "angle"}


def _detect_groups(model: Model, task: str | None, nc: int | None, by_role: dict[str, HeadBranch],
                   kpt: tuple[int, int] | None) -> list[OutputGroup]:
    """Row groups of the [batch, rows, anchors] output and a prototypes output, when the width adds up."""
    if nc is None or "box" not in by_role:
        return []
    groups: list[OutputGroup] = []
    extra_role = EXTRA_ROLES.get(task or "")
    extra = by_role.get(extra_role).channels if extra_role and extra_role in by_role else 0
    for info in model.outputs:
        shape = info.shape
        if len(shape) == 3 and shape[1] == 4 + nc + extra:
            groups += _row_groups(info.name, nc, extra_role if extra else None, extra, kpt)
        elif len(shape) == 4 and "prototypes" in by_role:
            groups.append(OutputGroup(info.name, "prototypes"))
        elif len(shape) == 3 and shape[2] == 6:
            # end-to-end (one-to-one) head: [batch, detections, x1 y1 x2 y2 score class]
            groups += [OutputGroup(info.name, "box", tuple(range(4)), axis=2),
                       OutputGroup(info.name, "scores", (4,), axis=2)]
        else:
            return []
    return groups


def _row_groups(output: str, nc: int, extra_role: str | None, extra: int,
                kpt: tuple[int, int] | None) -> list[OutputGroup]:
    groups = [OutputGroup(output, "box", tuple(range(4)), anchor_wise=True),
              OutputGroup(output, "scores", tuple(range(4, 4 + nc)), anchor_wise=True)]
    start = 4 + nc
    if extra_role == "keypoints" and kpt:
        count, ndim = kpt
        xy = tuple(start + k * ndim + d for k in range(count) for d in range(2))
        groups.append(OutputGroup(output, "keypoint_xy", xy, anchor_wise=True))
        if ndim == 3:
            vis = tuple(start + k * ndim + 2 for k in range(count))
            groups.append(OutputGroup(output, "keypoint_visibility", vis, anchor_wise=True))
    elif extra_role:
        groups.append(OutputGroup(output, extra_role, tuple(range(start, start + extra)), anchor_wise=True))
    return groups
