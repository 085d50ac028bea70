"""Layout propagation: run layout-agnostic ops on NHWC tensors, keep transposes only where needed.

This is the transpose optimizer of `to-nhwc`, written as a forward dataflow over the graph (the
formulation of TVM's ConvertLayout rather than ORT's push-and-cancel; the result is the same):

- every tensor has a *native layout* (how its producer stores it) and versions in other layouts,
  made on demand and cached, so a tensor is transposed at most once per layout;
- an NCHW-only op (Conv, MaxPool, ...) reads its input in NCHW and writes NCHW, but its output
  *prefers* NHWC: that is the Transpose pair a naive conversion wraps around it;
- a layout-agnostic op picks the layout that needs the fewest transposed elements given what its
  inputs prefer (a graph output must end in its original layout), rewrites its axis-dependent
  attributes and index inputs (Concat/Split/Softmax axis, Slice axes, Resize scales, Reshape
  shape) and permutes constant operands instead of transposing them (folding into constants);
- a Transpose in the model is absorbed: its output is the input's bytes seen in another layout,
  so consecutive transposes merge and inverse pairs cancel without ever being materialised;
- a Transpose that only moves length-1 axes is emitted as a Reshape (it moves no data);
- Q/DQ pairs stay next to the op they quantize: a layout change requested above a Q->DQ chain is
  made before the Q (the chain is cloned into the requested layout), except when the chain hangs
  off an NCHW op's output, where the transpose goes after the DQ. Per-channel axes are remapped.

Layout conventions are in `perm.py` (stored = np.transpose(logical, layout)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from yolograph.ir.graph_view import constant_value
from yolograph.ir.model import Model
from yolograph.layout.perm import (
    NCHW_TO_NHWC,
    Perm,
    after_transpose,
    conversion,
    identity,
    is_identity,
    moves_only_unit_axes,
    permute_constant,
    reshape_layout,
    stored_axis,
    stored_shape,
)

# Ops ONNX defines on NCHW only: they read and write the identity layout.
NCHW_OPS = frozenset({
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "BatchNormalization", "InstanceNormalization",
    "LRN", "DepthToSpace", "SpaceToDepth", "MaxUnpool", "MaxRoiPool", "RoiAlign",
})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
UNARY_OPS = frozenset({
    "Sigmoid", "Relu", "LeakyRelu", "Tanh", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Cast",
    "Clip", "HardSigmoid", "HardSwish", "Erf", "Floor", "Ceil", "Round", "Identity", "Softplus", "Softsign",
    "Elu", "Selu", "Celu", "Gelu", "Mish", "Sin", "Cos", "Not", "IsNaN", "IsInf", "Sign", "ThresholdedRelu",
    "QuickGelu", "FastGelu",  # com.microsoft elementwise ops (QuickGelu is SiLU fused by insert-qdq for ORT)
})
BROADCAST_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Equal", "Greater", "Less",
    "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Where", "PRelu", "Mod", "BitShift",
})
AXIS_OPS = frozenset({"Concat", "Split", "Softmax", "LogSoftmax", "Hardmax"})
RESHAPE_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


@dataclass
class PropagationStats:
    transposes_emitted: int = 0
    reshapes_emitted: int = 0  # layout changes that move no data
    transposes_absorbed: int = 0  # Transpose nodes of the model folded into a layout
    constants_permuted: int = 0
    qdq_cloned: int = 0
    nhwc_ops: int = 0  # layout-agnostic ops now running in a non-identity layout


@dataclass
class _Tensor:
    """Per logical tensor: its native layout, preferred layout and the versions made so far."""

    logical: gs.Tensor
    native: Perm
    preferred: Perm
    versions: dict[Perm, gs.Tensor] = field(default_factory=dict)


class LayoutPropagation:
    """One run of the propagation over a Model's graph (edits the graph in place)."""

    def __init__(self, model: Model, *, internal: bool = True, nchw_ops: frozenset[str] = frozenset()) -> None:
        self.model = model
        self.graph = model.graph
        self.internal = internal
        self.nchw_ops = NCHW_OPS | nchw_ops  # extra ops kept NCHW, e.g. Resize for TVM's ONNX importer
        self.stats = PropagationStats()
        self.graph.toposort()
        self.nodes = list(self.graph.nodes)
        # Logical facts are read before any edit: inputs, attributes, shapes and producers.
        self.logical_inputs = {id(n): list(n.inputs) for n in self.nodes}
        self.logical_attrs = {id(n): dict(n.attrs) for n in self.nodes}
        self.producer = {id(t): n for n in self.nodes for t in n.outputs}
        # Keyed by tensor identity: names change during the rewrite, tensor objects do not.
        known = logical_shapes(model)
        self.shapes = {id(t): known.get(t.name) for n in self.nodes for t in n.inputs + n.outputs}
        for tensor in self.graph.inputs:
            self.shapes[id(tensor)] = tuple(tensor.shape) if tensor.shape else known.get(tensor.name)
        self.dtypes = {id(t): t.dtype for n in self.nodes for t in n.outputs}
        self.tensors: dict[int, _Tensor] = {}
        self.names = set(self.graph.tensors()) | {f"node:{n.name}" for n in self.nodes}
        self.constant_cache: dict[tuple[int, Perm], gs.Constant] = {}
        self.removed: list[gs.Node] = []
        self.new_nodes: list[gs.Node] = []
        for tensor in self.graph.inputs:
            rank = self._rank(tensor)
            self._define(tensor, identity(rank) if rank is not None else (), tensor)

    # -- public -------------------------------------------------------------------------------

    def set_input_layout(self, tensor: gs.Variable, layout: Perm, *, preferred: bool) -> gs.Variable:
        """Replace graph input `tensor` by one stored in `layout` (same name); returns the new input."""
        shape = self.shapes[id(tensor)]
        stored = gs.Variable(tensor.name, dtype=tensor.dtype, shape=list(stored_shape(shape, layout)))
        tensor.name = self._unique(f"{tensor.name}/logical")
        self.graph.inputs[self.graph.inputs.index(tensor)] = stored
        record = self.tensors[id(tensor)]
        record.versions = {layout: stored}
        record.native = layout
        record.preferred = layout if preferred else identity(len(layout))
        return stored

    def run(self) -> PropagationStats:
        for node in self.nodes:
            self._visit(node)
        self._restore_outputs()
        for node in self.removed:
            node.inputs.clear()
            node.outputs.clear()
        self.graph.nodes.extend(self.new_nodes)
        self.graph.cleanup(remove_unused_graph_inputs=False)
        self.graph.toposort()
        return self.stats

    # -- visiting nodes --------------------------------------------------------------------------

    def _visit(self, node: gs.Node) -> None:
        op = node.op
        if op in self.nchw_ops:
            self._visit_fixed(node, nhwc_output=self.internal)
        elif op in QDQ_OPS:
            self._visit_qdq(node)
        elif op == "Transpose" and self._absorb_transpose(node):
            pass
        elif op in HANDLERS and self._visit_agnostic(node):
            pass
        else:
            self._visit_fixed(node, nhwc_output=False)

    def _visit_fixed(self, node: gs.Node, *, nhwc_output: bool) -> None:
        """An op that needs its inputs in their logical layout: NCHW ops and unknown ops."""
        for index, tensor in enumerate(self.logical_inputs[id(node)]):
            if self._is_data(tensor):
                node.inputs[index] = self.get(tensor, self._logical_layout(tensor))
        for tensor in node.outputs:
            rank = self._rank(tensor)
            native = identity(rank) if rank is not None else ()
            wants_nhwc = nhwc_output and rank == 4
            self._define(tensor, native, tensor, preferred=NCHW_TO_NHWC if wants_nhwc else native)

    def _visit_qdq(self, node: gs.Node) -> None:
        """Q/DQ run in whatever layout their input is stored in (no transpose between Q and DQ)."""
        source = self.logical_inputs[id(node)][0]
        if not self._is_data(source):
            self._visit_fixed(node, nhwc_output=False)
            return
        record = self.tensors[id(source)]
        layout = record.native
        node.inputs[0] = record.versions[layout]
        self._remap_axis_attr(node, layout)
        for tensor in node.outputs:
            self._define(tensor, layout, tensor, preferred=record.preferred)

    def _absorb_transpose(self, node: gs.Node) -> bool:
        source = self.logical_inputs[id(node)][0]
        perm = self.logical_attrs[id(node)].get("perm")
        if not self._is_data(source) or perm is None or self._rank(source) is None:
            return False
        record = self.tensors[id(source)]
        layout = after_transpose(record.native, perm)
        output = node.outputs[0]
        self._define(output, layout, record.versions[record.native])
        self.removed.append(node)
        self.stats.transposes_absorbed += 1
        return True

    def _visit_agnostic(self, node: gs.Node) -> bool:
        handler = HANDLERS[node.op]
        data = [t for t in self._data_inputs(node) if self._is_data(t)]
        if not data or any(self._rank(t) is None for t in data):
            return False
        rank = max(self._rank(t) for t in data)
        if not handler.lower_rank_ok and any(self._rank(t) != rank for t in data):
            return False
        candidates: list[Perm] = []
        for tensor in data:
            preferred = self.tensors[id(tensor)].preferred
            if len(preferred) == rank and preferred not in candidates:
                candidates.append(preferred)
        if identity(rank) not in candidates:
            candidates.append(identity(rank))
        viable = [c for c in candidates if is_identity(c) or handler.accepts(self, node, c)]
        # Fewest transposed elements; on a tie keep the identity (change nothing without a reason).
        layout = min(viable, key=lambda c: (self._cost(node, data, c), not is_identity(c)))
        if is_identity(layout):
            return False  # the fixed path handles identity
        outputs = handler.apply(self, node, layout)
        for tensor, out_layout in zip(node.outputs, outputs):
            self._define(tensor, out_layout, tensor)
        self.stats.nhwc_ops += 1
        return True

    def _cost(self, node: gs.Node, data: list[gs.Tensor], layout: Perm) -> int:
        """Elements transposed if `node` runs in `layout` (inputs not preferring it, outputs that must be restored)."""
        cost = 0
        for tensor in data:
            record = self.tensors[id(tensor)]
            # Free: the preferred layout, a conversion already made, or one that moves no data. An NCHW
            # op's raw output (native, not preferred) is not free: NHWC there is the point of the pass.
            made = layout in record.versions and layout != record.native
            equivalent = layout == record.native and self._is_reshape(tensor, record, record.preferred)
            if layout == record.preferred or made or equivalent or self._is_reshape(tensor, record, layout):
                continue
            cost += self._numel(tensor)
        if not is_identity(layout):
            cost += sum(self._numel(t) for t in node.outputs if t in self.graph.outputs)
        return cost

    # -- versions ------------------------------------------------------------------------------

    def get(self, tensor: gs.Tensor, layout: Perm) -> gs.Tensor:
        """`tensor` stored in `layout`, transposing (once, cached) when no such version exists."""
        if not self._is_data(tensor):
            return self.constant_in(tensor, layout)
        record = self.tensors[id(tensor)]
        if layout in record.versions:
            return record.versions[layout]
        producer = self.producer.get(id(tensor))
        if producer is not None and producer.op in QDQ_OPS and self._push_through_qdq(producer):
            version = self._clone_qdq(producer, layout)
        else:
            version = self._convert(tensor, record, layout)
        record.versions[layout] = version
        return version

    def _push_through_qdq(self, node: gs.Node) -> bool:
        """Make a layout change before a Q->DQ chain, unless the chain quantizes an NCHW op's output."""
        source = self.logical_inputs[id(node)][0]
        if not self._is_data(source) or len(node.outputs) != 1:
            return False
        while True:
            producer = self.producer.get(id(source))
            if producer is None or producer.op not in QDQ_OPS:
                return producer is None or producer.op not in self.nchw_ops
            source = self.logical_inputs[id(producer)][0]

    def _clone_qdq(self, node: gs.Node, layout: Perm) -> gs.Tensor:
        inputs = list(self.logical_inputs[id(node)])
        inputs[0] = self.get(inputs[0], layout)
        logical_out = node.outputs[0]
        output = self._variable(logical_out, layout)
        clone = gs.Node(node.op, self._unique_node(f"{node.name}/{_tag(layout)}"),
                        attrs=dict(self.logical_attrs[id(node)]), inputs=inputs, outputs=[output])
        self._remap_axis_attr(clone, layout)
        self.new_nodes.append(clone)
        self.stats.qdq_cloned += 1
        return output

    def _is_reshape(self, tensor: gs.Tensor, record: _Tensor, layout: Perm) -> bool:
        """Converting `tensor` from its native layout to `layout` moves no data (only length-1 axes move)."""
        shape = self.shapes.get(id(tensor))
        return shape is not None and layout != record.native and len(layout) == len(shape) and \
            moves_only_unit_axes(conversion(record.native, layout), stored_shape(shape, record.native))

    def _convert(self, tensor: gs.Tensor, record: _Tensor, layout: Perm) -> gs.Tensor:
        source = record.versions[record.native]
        perm = conversion(record.native, layout)
        shape = self.shapes.get(id(tensor))
        output = self._variable(tensor, layout)
        name = self._unique_node(f"{tensor.name}/to_{_tag(layout)}")
        if self._is_reshape(tensor, record, layout):
            target = gs.Constant(self._unique(f"{name}/shape"), np.array(stored_shape(shape, layout), dtype=np.int64))
            self.new_nodes.append(gs.Node("Reshape", name, inputs=[source, target], outputs=[output]))
            self.stats.reshapes_emitted += 1
        else:
            self.new_nodes.append(gs.Node("Transpose", name, attrs={"perm": list(perm)}, inputs=[source], outputs=[output]))
            self.stats.transposes_emitted += 1
        return output

    def constant_in(self, tensor: gs.Tensor, layout: Perm) -> gs.Tensor:
        """A broadcastable constant permuted into `layout` (the transpose folds into the constant)."""
        value = constant_value(tensor)
        if value is None or is_identity(layout) or np.ndim(value) == 0 or np.size(value) == 1:
            return tensor
        key = (id(tensor), layout)
        if key not in self.constant_cache:
            name = self._unique(f"{tensor.name}/{_tag(layout)}")
            self.constant_cache[key] = gs.Constant(name, permute_constant(np.asarray(value), layout))
            self.stats.constants_permuted += 1
        return self.constant_cache[key]

    def _restore_outputs(self) -> None:
        """Graph outputs keep their original layout and name."""
        exposed = {id(t) for t in self.graph.inputs} | {id(t) for t in self.graph.outputs}
        for position, output in enumerate(list(self.graph.outputs)):
            if id(output) not in self.tensors:
                continue
            version = self.get(output, self._logical_layout(output))
            if version is output:
                continue
            name = output.name
            output.name = self._unique(f"{name}/{_tag(self.tensors[id(output)].native)}")
            if id(version) in exposed or not isinstance(version, gs.Variable):
                # Another input's or output's own tensor (e.g. through an absorbed identity Transpose):
                # renaming it would rename that one, so this output becomes a copy of it.
                alias = gs.Variable(name, dtype=output.dtype)
                self.new_nodes.append(gs.Node("Identity", self._unique_node(f"{name}/alias"), inputs=[version],
                                              outputs=[alias]))
                version = alias
            version.name = name
            exposed.add(id(version))
            version.dtype = output.dtype
            version.shape = list(self.shapes[id(output)]) if self.shapes.get(id(output)) else output.shape
            self.graph.outputs[position] = version

    # -- handler helpers -------------------------------------------------------------------------

    def _data_inputs(self, node: gs.Node) -> list[gs.Tensor]:
        inputs = self.logical_inputs[id(node)]
        return inputs if HANDLERS[node.op].all_inputs_data else inputs[:1]

    def convert_inputs(self, node: gs.Node, layout: Perm, *, all_inputs: bool) -> None:
        inputs = self.logical_inputs[id(node)]
        for index, tensor in enumerate(inputs if all_inputs else inputs[:1]):
            if tensor.name == "":
                continue
            if self._is_data(tensor):
                node.inputs[index] = self.get(tensor, layout)
            else:
                node.inputs[index] = self.constant_in(tensor, layout)

    def index_constant(self, node: gs.Node, values, suffix: str) -> gs.Constant:
        return gs.Constant(self._unique(f"{node.name}/{suffix}"), np.asarray(values, dtype=np.int64))

    def logical_shape(self, tensor: gs.Tensor) -> tuple[int, ...] | None:
        return self.shapes.get(id(tensor))

    def attr(self, node: gs.Node, name: str, default=None):
        return self.logical_attrs[id(node)].get(name, default)

    def input_value(self, node: gs.Node, index: int):
        inputs = self.logical_inputs[id(node)]
        if index >= len(inputs) or inputs[index].name == "":
            return None
        return constant_value(inputs[index])

    def _remap_axis_attr(self, node: gs.Node, layout: Perm) -> None:
        """Per-channel Q/DQ: the quantization axis (default 1) is a data axis, so it follows the layout."""
        scale = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
        if scale is None or np.size(scale) <= 1 or not layout:
            return
        axis = self.logical_attrs.get(id(node), node.attrs).get("axis", 1)
        node.attrs["axis"] = stored_axis(layout, int(axis))

    # -- bookkeeping -----------------------------------------------------------------------------

    def _define(self, tensor: gs.Tensor, native: Perm, stored: gs.Tensor, *, preferred: Perm | None = None) -> None:
        self.tensors[id(tensor)] = _Tensor(tensor, native, preferred if preferred is not None else native, {native: stored})
        if stored is tensor and native and not is_identity(native):
            self._set_stored_shape(tensor, native)

    def _logical_layout(self, tensor: gs.Tensor) -> Perm:
        rank = self._rank(tensor)
        return identity(rank if rank is not None else len(self.tensors[id(tensor)].native))

    def _is_data(self, tensor: gs.Tensor) -> bool:
        return isinstance(tensor, gs.Variable) and tensor.name != "" and constant_value(tensor) is None \
            and id(tensor) in self.tensors

    def _rank(self, tensor: gs.Tensor) -> int | None:
        if isinstance(tensor, gs.Constant):
            return tensor.values.ndim
        shape = self.shapes.get(id(tensor))
        return len(shape) if shape is not None else None

    def _numel(self, tensor: gs.Tensor) -> int:
        shape = self.shapes.get(id(tensor))
        return int(np.prod(shape)) if shape else 1

    def _set_stored_shape(self, tensor: gs.Tensor, layout: Perm) -> None:
        shape = self.shapes.get(id(tensor))
        tensor.shape = list(stored_shape(shape, layout)) if shape is not None else None

    def _variable(self, logical: gs.Tensor, layout: Perm) -> gs.Variable:
        shape = self.shapes.get(id(logical))
        return gs.Variable(self._unique(f"{logical.name}/{_tag(layout)}"), dtype=self.dtypes.get(id(logical), logical.dtype),
                           shape=list(stored_shape(shape, layout)) if shape is not None else None)

    def _unique(self, base: str) -> str:
        name, suffix = base, 1
        while name in self.names:
            name, suffix = f"{base}_{suffix}", suffix + 1
        self.names.add(name)
        return name

    def _unique_node(self, base: str) -> str:
        return self._unique(f"node:{base}")[len("node:"):]


def logical_shapes(model: Model) -> dict[str, tuple[int, ...] | None]:
    """Static shapes of every tensor, also past elementwise ops ONNX cannot infer (com.microsoft QuickGelu).

    ONNX shape inference stops at ops of other domains; shape-wise those elementwise ops are Identity,
    so they are inferred through a copy where they are.
    """
    names = [t.name for n in model.graph.nodes for t in n.outputs]
    shapes = {name: model.shape_of(name) for name in names}
    if all(shape is not None for shape in shapes.values()):
        return shapes
    proto = model.to_onnx()
    replaced = False
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") and node.op_type in UNARY_OPS:
            node.op_type, node.domain = "Identity", ""
            del node.attribute[:]
            del node.input[1:]
            replaced = True
    if not replaced:
        return shapes
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # best effort: the shapes ONNX already knew remain
        return shapes
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.name in shapes and shapes[value.name] is None and value.type.tensor_type.HasField("shape") \
                and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _tag(layout: Perm) -> str:
    if layout == NCHW_TO_NHWC:
        return "nhwc"
    if is_identity(layout):
        return "nchw" if len(layout) == 4 else "plain"
    return "p" + "".join(map(str, layout))


# -- op handlers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handler:
    """How a layout-agnostic op runs in a layout: `accepts` checks, `apply` rewrites and returns output layouts."""

    accepts: Callable[[LayoutPropagation, gs.Node, Perm], bool]
    apply: Callable[[LayoutPropagation, gs.Node, Perm], list[Perm]]
    all_inputs_data: bool = False  # every input is data (elementwise); else only input 0
    lower_rank_ok: bool = False  # data inputs may have lower rank (broadcasting constants)


def _always(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> bool:
    return True


def _elementwise_accepts(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> bool:
    # Non-constant operands must be full rank: a lower-rank one would need an Unsqueeze first.
    return all(ctx._rank(t) == len(layout) for t in ctx.logical_inputs[id(node)] if ctx._is_data(t))


def _elementwise_apply(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> list[Perm]:
    ctx.convert_inputs(node, layout, all_inputs=True)
    return [layout] * len(node.outputs)


def _axis_apply(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> list[Perm]:
    ctx.convert_inputs(node, layout, all_inputs=node.op == "Concat")
    default_axis = 0 if node.op in ("Concat", "Split") else -1
    node.attrs["axis"] = stored_axis(layout, int(ctx.attr(node, "axis", default_axis)))
    return [layout] * len(node.outputs)


def _softmax_accepts(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> bool:
    return ctx.model.opset >= 13  # before opset 13 Softmax flattens from `axis` on


def _slice_accepts(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> bool:
    inputs = ctx.logical_inputs[id(node)]
    has_axes = len(inputs) > 3 and inputs[3].name != ""
    if has_axes:
        return ctx.input_value(node, 3) is not None
    return ctx.logical_shape(inputs[1]) is not None or ctx.input_value(node, 1) is not None


def _slice_apply(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> list[Perm]:
    ctx.convert_inputs(node, layout, all_inputs=False)
    axes = ctx.input_value(node, 3)
    if axes is None:
        starts = ctx.input_value(node, 1)
        count = np.size(starts) if starts is not None else ctx.logical_shape(ctx.logical_inputs[id(node)][1])[0]
        axes = np.arange(count)
    remapped = [stored_axis(layout, int(a)) for a in np.asarray(axes).reshape(-1)]
    while len(node.inputs) < 4:
        node.inputs.append(gs.Variable.empty())
    node.inputs[3] = ctx.index_constant(node, remapped, "axes")
    return [layout]


def _resize_accepts(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> bool:
    if ctx.attr(node, "axes") is not None:
        return False
    inputs = ctx.logical_inputs[id(node)]
    for index in (1, 2, 3):
        if index < len(inputs) and inputs[index].name != "" and ctx.input_value(node, index) is None:
            return False
    return True


def _resize_apply(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> list[Perm]:
    ctx.convert_inputs(node, layout, all_inputs=False)
    order = list(layout)
    roi = ctx.input_value(node, 1)
    if roi is not None and np.size(roi):
        half = np.asarray(roi).reshape(2, -1)
        node.inputs[1] = gs.Constant(ctx._unique(f"{node.name}/roi"), half[:, order].reshape(-1).astype(half.dtype))
    for index, suffix in ((2, "scales"), (3, "sizes")):
        value = ctx.input_value(node, index)
        if value is not None and np.size(value):
            node.inputs[index] = gs.Constant(ctx._unique(f"{node.name}/{suffix}"), np.asarray(value)[order])
    return [layout]


def _reshape_target(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> Perm | None:
    source = ctx.logical_inputs[id(node)][0]
    in_shape, out_shape = ctx.logical_shape(source), ctx.logical_shape(node.outputs[0])
    if in_shape is None or out_shape is None:
        return None
    return reshape_layout(in_shape, out_shape, layout)


def _reshape_accepts(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> bool:
    return _reshape_target(ctx, node, layout) is not None


def _reshape_apply(ctx: LayoutPropagation, node: gs.Node, layout: Perm) -> list[Perm]:
    """Reshape/Flatten/Squeeze/Unsqueeze become a Reshape of the stored tensor to the stored output shape."""
    out_layout = _reshape_target(ctx, node, layout)
    out_shape = ctx.logical_shape(node.outputs[0])
    source = ctx.get(ctx.logical_inputs[id(node)][0], layout)
    node.op = "Reshape"
    node.attrs.clear()
    node.inputs.clear()
    node.inputs.extend([source, ctx.index_constant(node, stored_shape(out_shape, out_layout), "shape")])
    return [out_layout]


HANDLERS: dict[str, Handler] = {
    **{op: Handler(_elementwise_accepts, _elementwise_apply, all_inputs_data=True) for op in UNARY_OPS},
    **{op: Handler(_elementwise_accepts, _elementwise_apply, all_inputs_data=True, lower_rank_ok=True) for op in BROADCAST_OPS},
    "Concat": Handler(_always, _axis_apply, all_inputs_data=True),
    "Split": Handler(_always, _axis_apply),
    "Softmax": Handler(_softmax_accepts, _axis_apply),
    "LogSoftmax": Handler(_softmax_accepts, _axis_apply),
    "Hardmax": Handler(_softmax_accepts, _axis_apply),
    "Slice": Handler(_slice_accepts, _slice_apply),
    "Resize": Handler(_resize_accepts, _resize_apply),
    **{op: Handler(_reshape_accepts, _reshape_apply) for op in RESHAPE_OPS},
}
