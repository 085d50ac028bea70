"""Channel dependency groups: which output channels of which convs must be removed together.

The analysis walks the graph in topological order and gives every channel of every NCHW feature map
an *atom* (one channel of the op that created it: a Conv, or a graph input). Ops that keep channels
aligned (BN, activations, depthwise Conv, pooling, Resize) pass their input's atoms through;
Concat on the channel axis concatenates them and Split slices them; elementwise binary ops (residual
Add, Mul) *couple* their operands' atoms channel by channel (union-find). Ops whose channel
semantics are not understood (Reshape, Transpose, Slice on channels, Softmax, ...) and the model
outputs *block* the atoms they read: those channels are never removed. The head's final convs (every
branch of every task: box, class, mask coefficients, prototypes, keypoints, angle, a classifier's last
conv) and the DFL conv are blocked with their role, found structurally by `YoloFacts` (a final conv is
one whose output reaches a graph output through no other conv), not by ultralytics names.

A *channel class* is one union-find set of atoms: removing it removes one output channel from each
member conv and one input channel from each consumer. A *group* gathers the classes with the same
members (e.g. the C2f residual group: the second half of cv1's outputs, every bottleneck's cv2
output), so a group is what `prune` ranks, rounds (round_to) and reports.

Nothing here edits the model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import onnx_graphsurgeon as gs

from yolograph.ir.graph_view import constant_value
from yolograph.ir.model import Model

# Ops whose output channel c is a function of input channel c only (no parameters to slice).
CHANNELWISE_UNARY = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Identity",
    "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Softplus", "Softsign", "Elu", "Selu",
    "Celu", "Gelu", "Mish", "Dropout", "Cast", "Floor", "Ceil", "Round", "Sign", "ThresholdedRelu",
    "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    "Resize", "Upsample", "Pad",
})
ELEMENTWISE_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean", "PRelu", "Where"})
NORMALIZATION = frozenset({"BatchNormalization"})


@dataclass(frozen=True)
class ChannelMember:
    """The output channels of one producing op that belong to a group, in the group's order."""

    node: str
    op: str
    channels: tuple[int, ...]


@dataclass
class ChannelGroup:
    """Channels that can only be removed together; `size` is the number of removable channel slots."""

    id: int
    size: int
    members: tuple[ChannelMember, ...]
    consumers: tuple[str, ...]
    prunable: bool
    reason: str = ""
    # Union-find roots of the group's channel classes, in the same order as members' channels.
    classes: tuple[int, ...] = field(default=(), repr=False)

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m.node for m in self.members)


@dataclass
class ChannelAnalysis:
    """Atoms, their coupling and every tracked tensor's channel -> atom map."""

    atom_node: list[str]
    atom_channel: list[int]
    parent: list[int]
    tensor_atoms: dict[str, np.ndarray]
    blocked: dict[int, list[str]]  # atom -> reasons it may not be removed
    node_order: list[str]
    groups: list[ChannelGroup] = field(default_factory=list)

    def root(self, atom: int) -> int:
        parent = self.parent
        while parent[atom] != atom:
            parent[atom] = parent[parent[atom]]
            atom = parent[atom]
        return atom

    def tensor_roots(self, tensor_name: str) -> np.ndarray:
        """Class root of each channel of a tracked tensor."""
        return np.array([self.root(int(a)) for a in self.tensor_atoms[tensor_name]], dtype=np.int64)

    def removed_positions(self, tensor_name: str, removed_roots: set[int]) -> np.ndarray:
        """Channel indices of `tensor_name` that go away when the classes `removed_roots` are removed."""
        if tensor_name not in self.tensor_atoms or not removed_roots:
            return np.zeros(0, dtype=np.int64)
        roots = self.tensor_roots(tensor_name)
        return np.flatnonzero(np.isin(roots, np.fromiter(removed_roots, dtype=np.int64)))


class _Builder:
    """Builds a ChannelAnalysis in one topological walk."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.atom_node: list[str] = []
        self.atom_channel: list[int] = []
        self.parent: list[int] = []
        self.tensor_atoms: dict[str, np.ndarray] = {}
        self.blocked: dict[int, list[str]] = defaultdict(list)

    # -- primitives -------------------------------------------------------------------------------

    def new_atoms(self, node: str, count: int) -> np.ndarray:
        start = len(self.parent)
        self.atom_node += [node] * count
        self.atom_channel += list(range(count))
        self.parent += list(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, atom: int) -> int:
        parent = self.parent
        while parent[atom] != atom:
            parent[atom] = parent[parent[atom]]
            atom = parent[atom]
        return atom

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def block(self, atoms: Iterable[int], reason: str) -> None:
        for atom in atoms:
            if reason not in self.blocked[int(atom)]:
                self.blocked[int(atom)].append(reason)

    def channels(self, tensor: gs.Tensor) -> int | None:
        """Channel count of a rank-4 (NCHW) tensor, else None."""
        shape = self.model.shape_of(tensor.name) if tensor.name else None
        if shape is None and tensor.shape is not None:
            shape = tuple(tensor.shape)
        if shape is None or len(shape) != 4 or not isinstance(shape[1], (int, np.integer)):
            return None
        return int(shape[1])

    def tracked(self, tensor: gs.Tensor) -> np.ndarray | None:
        return self.tensor_atoms.get(tensor.name)

    def set_output(self, tensor: gs.Tensor, atoms: np.ndarray) -> None:
        self.tensor_atoms[tensor.name] = atoms

    def fresh_blocked_outputs(self, node: gs.Node, reason: str) -> None:
        for tensor in node.outputs:
            count = self.channels(tensor)
            if count is not None:
                atoms = self.new_atoms(node.name, count)
                self.block(atoms, reason)
                self.set_output(tensor, atoms)

    def block_inputs(self, node: gs.Node, reason: str) -> None:
        for tensor in node.inputs:
            atoms = self.tracked(tensor)
            if atoms is not None:
                self.block(atoms, reason)

    # -- the walk ---------------------------------------------------------------------------------

    def visit(self, node: gs.Node) -> None:
        tracked_inputs = [t for t in node.inputs if self.tracked(t) is not None]
        if not tracked_inputs and node.op != "Conv":
            # Nothing channel-tracked flows in: outputs that are feature maps start untracked atoms.
            self.fresh_blocked_outputs(node, f"computed by {node.op} {node.name} from no feature map")
            return
        handler = getattr(self, f"_visit_{node.op}", None)
        if handler is not None:
            handler(node)
        elif node.op in CHANNELWISE_UNARY:
            self._channelwise(node)
        elif node.op in NORMALIZATION:
            self._batchnorm(node)
        elif node.op in ELEMENTWISE_BINARY:
            self._elementwise(node)
        else:
            self._unsupported(node)

    def _unsupported(self, node: gs.Node, why: str = "") -> None:
        reason = f"read by {node.op} {node.name}" + (f" ({why})" if why else "")
        self.block_inputs(node, reason)
        self.fresh_blocked_outputs(node, f"produced by {node.op} {node.name}")

    def _channelwise(self, node: gs.Node) -> None:
        source = self.tracked(node.inputs[0])
        out = node.outputs[0]
        if source is None or self.channels(out) != len(source):
            self._unsupported(node, "changes the channel count")
            return
        self.set_output(out, source)
        for extra in node.outputs[1:]:
            if self.channels(extra) is not None:
                self._unsupported(node, "several feature-map outputs")

    def _batchnorm(self, node: gs.Node) -> None:
        if any(constant_value(t) is None for t in node.inputs[1:5]):
            self._unsupported(node, "non-constant parameters")
            return
        self._channelwise(node)

    def _visit_Conv(self, node: gs.Node) -> None:
        weight = constant_value(node.inputs[1])
        source = self.tracked(node.inputs[0])
        out = node.outputs[0]
        out_channels = self.channels(out)
        if weight is None or (len(node.inputs) > 2 and constant_value(node.inputs[2]) is None):
            self._unsupported(node, "non-constant weights")
            return
        groups = int(node.attrs.get("group", 1))
        if groups == 1:
            if out_channels is not None:
                self.set_output(out, self.new_atoms(node.name, out_channels))
            if source is None and node.inputs[0].name:
                pass  # reads an untracked tensor: nothing to couple
            return
        in_channels = len(source) if source is not None else None
        if source is not None and groups == in_channels == out_channels:
            # Depthwise: output channel c reads input channel c only; both go together.
            self.set_output(out, source)
            return
        self._unsupported(node, f"grouped conv with group={groups}")

    def _elementwise(self, node: gs.Node) -> None:
        out = node.outputs[0]
        out_channels = self.channels(out)
        if out_channels is None:
            self._unsupported(node, "output is not a feature map")
            return
        full = []
        for tensor in node.inputs:
            atoms = self.tracked(tensor)
            if atoms is not None:
                if len(atoms) == out_channels:
                    full.append(atoms)
                elif len(atoms) != 1:
                    self._unsupported(node, "operands broadcast over channels")
                    return
                continue
            value = constant_value(tensor)
            if value is None and tensor.name:
                shape = self.model.shape_of(tensor.name)
                if shape is None or _channel_extent(shape) not in (1, None):
                    self._unsupported(node, "an untracked per-channel operand")
                    return
            elif value is not None and _channel_extent(np.shape(value)) not in (1, None, out_channels):
                self._unsupported(node, "a constant that does not broadcast over channels")
                return
        if not full:
            self._unsupported(node, "no full-width feature map operand")
            return
        for other in full[1:]:
            self.union(full[0], other)
        self.set_output(out, full[0])

    def _visit_Concat(self, node: gs.Node) -> None:
        maps = [self.tracked(t) for t in node.inputs]
        out = node.outputs[0]
        if any(m is None for m in maps) or self.channels(out) is None:
            self._unsupported(node, "mixes feature maps with other tensors")
            return
        axis = int(node.attrs.get("axis", 1)) % 4
        if axis == 1:
            self.set_output(out, np.concatenate(maps))
            return
        if any(len(m) != len(maps[0]) for m in maps):
            self._unsupported(node, "channel counts differ")
            return
        for other in maps[1:]:
            self.union(maps[0], other)
        self.set_output(out, maps[0])

    def _visit_Split(self, node: gs.Node) -> None:
        source = self.tracked(node.inputs[0])
        axis = int(node.attrs.get("axis", 0)) % 4
        if axis != 1:
            for tensor in node.outputs:
                self.set_output(tensor, source)
            return
        sizes = split_sizes(node, len(source))
        if sizes is None:
            self._unsupported(node, "split sizes are not constant")
            return
        offsets = np.cumsum([0] + sizes)
        for tensor, start, stop in zip(node.outputs, offsets[:-1], offsets[1:]):
            self.set_output(tensor, source[start:stop])


def split_sizes(node: gs.Node, channels: int) -> list[int] | None:
    """Section sizes of a Split from its `split` input, its attribute, or an even division."""
    if len(node.inputs) > 1 and node.inputs[1].name:
        value = constant_value(node.inputs[1])
        return None if value is None else [int(v) for v in np.asarray(value).ravel()]
    if "split" in node.attrs:
        return [int(v) for v in node.attrs["split"]]
    parts = int(node.attrs.get("num_outputs", len(node.outputs)))
    if channels % parts:
        return None
    return [channels // parts] * parts


def _channel_extent(shape: tuple[int, ...]) -> int | None:
    """Extent of the channel axis of a shape that broadcasts against NCHW (None if it has none)."""
    if len(shape) < 3:
        return None if all(d == 1 for d in shape) or len(shape) == 0 else -1
    return int(shape[-3])


def analyze_channels(model: Model) -> ChannelAnalysis:
    """Atoms, couplings and blocks for every feature map of `model` (see the module docstring)."""
    builder = _Builder(model)
    by_name = {node.name: node for node in model.graph.nodes}
    for tensor in model.graph.inputs:
        count = builder.channels(tensor)
        if count is not None:
            atoms = builder.new_atoms(tensor.name, count)
            builder.block(atoms, "model input")
            builder.set_output(tensor, atoms)
    order = [name for name in nx.topological_sort(model.nx_graph)]
    for name in order:
        builder.visit(by_name[name])
    for name, role in _head_roles(model).items():
        for tensor in by_name[name].outputs:
            atoms = builder.tracked(tensor)
            if atoms is not None:
                builder.block(atoms, f"head output ({role})")
    for tensor in model.graph.outputs:
        atoms = builder.tracked(tensor)
        if atoms is not None:
            builder.block(atoms, "model output")
    analysis = ChannelAnalysis(
        atom_node=builder.atom_node,
        atom_channel=builder.atom_channel,
        parent=builder.parent,
        tensor_atoms=builder.tensor_atoms,
        blocked=dict(builder.blocked),
        node_order=order,
    )
    analysis.groups = _build_groups(model, analysis, by_name)
    return analysis


def _head_roles(model: Model) -> dict[str, str]:
    """The head's final convs (every conv whose output reaches a graph output through no other conv: box,
    class, mask-coefficient, prototype, keypoint and angle branches, a classifier's last conv) and the
    DFL conv, each with the role the YOLO facts give its branch."""
    facts = model.facts
    roles = {name: "final conv" for name in facts.head_convs}
    for branch in facts.branches:
        for name in branch.nodes:
            if name in roles:
                roles[name] = f"{branch.role.replace('_', ' ')} branch"
    if facts.dfl_conv:
        roles[facts.dfl_conv] = "DFL conv"
    return roles


def _build_groups(model: Model, analysis: ChannelAnalysis, by_name: dict[str, gs.Node]) -> list[ChannelGroup]:
    class_atoms: dict[int, list[int]] = defaultdict(list)
    for atom in range(len(analysis.parent)):
        class_atoms[analysis.root(atom)].append(atom)
    class_reasons: dict[int, list[str]] = defaultdict(list)
    for atom, reasons in analysis.blocked.items():
        bucket = class_reasons[analysis.root(atom)]
        bucket += [r for r in reasons if r not in bucket]
    # Classes that no tracked tensor carries (e.g. outputs of ops nobody reads) are irrelevant.
    carried: set[int] = set()
    consumers_of: dict[int, set[str]] = defaultdict(set)
    for tensor_name, atoms in analysis.tensor_atoms.items():
        roots = {analysis.root(int(a)) for a in atoms}
        carried |= roots
    for node in model.graph.nodes:
        for tensor in node.inputs:
            atoms = analysis.tensor_atoms.get(tensor.name)
            if atoms is None:
                continue
            for root in {analysis.root(int(a)) for a in atoms}:
                consumers_of[root].add(node.name)
    by_signature: dict[tuple, list[int]] = defaultdict(list)
    for root, atoms in class_atoms.items():
        if root not in carried:
            continue
        signature = (tuple(sorted(analysis.atom_node[a] for a in atoms)), bool(class_reasons.get(root)))
        by_signature[signature].append(root)
    order = {name: index for index, name in enumerate(analysis.node_order)}
    groups: list[ChannelGroup] = []
    for (names, blocked), roots in by_signature.items():
        roots.sort(key=lambda r: min(analysis.atom_channel[a] for a in class_atoms[r] if analysis.atom_node[a] == names[0]))
        members = []
        for name in dict.fromkeys(names):
            per_class = [tuple(sorted(analysis.atom_channel[a] for a in class_atoms[r] if analysis.atom_node[a] == name))
                         for r in roots]
            channels = tuple(c for chans in per_class for c in chans)
            op = by_name[name].op if name in by_name else "input"
            members.append(ChannelMember(name, op, channels))
        members.sort(key=lambda m: order.get(m.node, -1))
        consumer_names = set().union(*(consumers_of[r] for r in roots))
        reasons = []
        for root in roots:
            reasons += [r for r in class_reasons.get(root, []) if r not in reasons]
        reasons.sort(key=lambda r: 0 if r.startswith(("head", "model")) else 1)
        groups.append(ChannelGroup(
            id=0,
            size=len(roots),
            members=tuple(members),
            consumers=tuple(sorted(consumer_names, key=lambda n: order.get(n, -1))),
            prunable=not blocked and all(m.op == "Conv" for m in members),
            reason="; ".join(reasons[:2]) + (f"; +{len(reasons) - 2} more" if len(reasons) > 2 else "")
            if blocked else ("" if all(m.op == "Conv" for m in members) else "not produced by a Conv"),
            classes=tuple(roots),
        ))
    groups.sort(key=lambda g: min(order.get(m.node, -1) for m in g.members))
    for index, group in enumerate(groups):
        group.id = index
    return groups


def find_channel_groups(model: Model) -> list[ChannelGroup]:
    """The channel dependency groups of `model`, in graph order (see the module docstring)."""
    return analyze_channels(model).groups
