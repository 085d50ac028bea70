"""The IR as a torch module: one small emitter for the ops YOLO graphs use, weights kept by name.

`GraphModule(model)` walks the graph's nodes in topological order and runs each with its torch
equivalent; nothing is traced or re-exported. Conv weights and biases become `torch.nn.Parameter`s
registered under the index of `param_names`, which holds each one's ONNX initializer name, so
`write_back(model)` puts trained values into exactly the initializers they came from (the names
round-trip bit for bit: an untrained module writes back identical bytes).

Q/DQ graphs (insert-qdq + calibrate) run as fake-quant: QuantizeLinear rounds with a straight-through
estimator and clamps to the integer range, DequantizeLinear scales back; a Conv weight stored as int8
behind its DequantizeLinear trains as a float master copy (`int8 x scale`) and is written back rounded
to int8 against its fixed per-channel scales (QAT-lite). Activation scales stay as calibrated.

Only the nodes the requested `outputs` need run, so a caller tapping the head's final convs skips the
decode. Shape-reading ops see static shapes; a Reshape whose leading dimension is the model's batch
size follows the batch actually fed, so the module trains on batches of a batch-1 export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx_graphsurgeon as gs
import torch
import torch.nn.functional as F

from yolograph.errors import ModelError
from yolograph.ir.model import Model

SUPPORTED_OPS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Cast", "Concat", "Constant", "Conv", "ConvTranspose", "Cos",
    "DequantizeLinear", "Div", "Exp", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "Identity", "LeakyRelu",
    "MatMul", "MaxPool", "Mul", "Pow", "QuantizeLinear", "QuickGelu", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Sin",
    "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
})

def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity in the backward pass (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


class GraphModule(torch.nn.Module):
    """Runs `model`'s graph (or the part `outputs` needs) in torch; Conv weights/biases are parameters."""

    def __init__(self, model: Model, outputs: Iterable[str] | None = None,
                 trainable: Callable[[gs.Node], bool] | None = None) -> None:
        super().__init__()
        self.input_names = [t.name for t in model.graph.inputs]
        self.output_names = list(outputs) if outputs is not None else [t.name for t in model.graph.outputs]
        self.batch = int(model.graph.inputs[0].shape[0]) if model.graph.inputs else 1
        self.nodes = _needed_nodes(model.graph, self.output_names)
        unsupported = sorted({n.op for n in self.nodes} - SUPPORTED_OPS)
        if unsupported:
            raise ModelError(f"The training emitter has no torch equivalent of {', '.join(unsupported)}; "
                             "distill supports the ops of YOLO detect/segment/pose/obb/classify graphs.")
        self.param_names: list[str] = []
        self.param_kind: list[str] = []  # "float", or the integer dtype a QAT master weight is written back to
        self.weights = torch.nn.ParameterList()
        self._constants: dict[str, torch.Tensor] = {}
        self._param_index: dict[str, int] = {}
        chosen = trainable or (lambda node: True)
        for node in self.nodes:
            if node.op in ("Conv", "ConvTranspose") and chosen(node):
                for tensor in node.inputs[1:3]:
                    self._make_parameter(tensor)
        for node in self.nodes:
            for tensor in node.inputs:
                if isinstance(tensor, gs.Constant) and tensor.name not in self._param_index:
                    self._constants[tensor.name] = torch.from_numpy(np.array(tensor.values))

    def _make_parameter(self, tensor: gs.Tensor) -> None:
        """Make the initializer behind a Conv weight/bias input trainable (through Q/DQ if present)."""
        dq = tensor.inputs[0] if isinstance(tensor, gs.Variable) and tensor.inputs else None
        if dq is not None and dq.op == "DequantizeLinear":
            source = dq.inputs[0]
            q = source.inputs[0] if isinstance(source, gs.Variable) and source.inputs else None
            if q is not None and q.op == "QuantizeLinear" and isinstance(q.inputs[0], gs.Constant):
                self._register(q.inputs[0].name, np.asarray(q.inputs[0].values, dtype=np.float32), "float")
            elif isinstance(source, gs.Constant) and all(isinstance(t, gs.Constant) for t in dq.inputs[1:]):
                # int8/int32 stored weight: train its dequantized value; the DQ node then re-quantizes it
                ints = np.asarray(source.values)
                self._register(source.name, _dequantize_np(ints, dq), ints.dtype.name)
            return
        if isinstance(tensor, gs.Constant) and np.asarray(tensor.values).dtype == np.float32:
            self._register(tensor.name, np.asarray(tensor.values), "float")

    def _register(self, name: str, value: np.ndarray, kind: str) -> None:
        if name in self._param_index:
            return
        self._param_index[name] = len(self.param_names)
        self.param_names.append(name)
        self.param_kind.append(kind)
        self.weights.append(torch.nn.Parameter(torch.from_numpy(np.array(value, dtype=np.float32))))

    def parameter(self, name: str) -> torch.nn.Parameter:
        return self.weights[self._param_index[name]]

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        values: dict[str, torch.Tensor] = dict(zip(self.input_names, inputs))
        for node in self.nodes:
            args = [self._value(t, values) for t in node.inputs]
            results = _run_node(self, node, args)
            for tensor, result in zip(node.outputs, results):
                values[tensor.name] = result
        return [values[name] for name in self.output_names]

    def _value(self, tensor: gs.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if tensor.name == "" and not isinstance(tensor, gs.Constant):
            return None  # an omitted optional input
        if tensor.name in self._param_index:
            return self.weights[self._param_index[tensor.name]]
        if tensor.name in values:
            return values[tensor.name]
        return self._constants[tensor.name]

    def dequantized_source(self, node: gs.Node) -> bool:
        """True when `node` is a DequantizeLinear whose stored integers are a trainable master weight."""
        return node.op == "DequantizeLinear" and node.inputs[0].name in self._param_index

    def write_back(self, model: Model) -> int:
        """Copy every parameter into the initializer of the same name in `model`; returns how many."""
        constants = {name: t for name, t in model.graph.tensors().items() if isinstance(t, gs.Constant)}
        dq_of = {n.inputs[0].name: n for n in model.graph.nodes if n.op == "DequantizeLinear"}
        for name, kind, param in zip(self.param_names, self.param_kind, self.weights):
            if name not in constants:
                raise ModelError(f"The model has no initializer {name!r} to write the trained weight into.")
            value = param.detach().numpy()
            if kind == "float":
                constants[name].values = np.array(value, dtype=np.float32, copy=True)
            else:
                constants[name].values = _quantize_np(value, dq_of[name], np.dtype(kind))
        return len(self.param_names)


def _needed_nodes(graph: gs.Graph, outputs: list[str]) -> list[gs.Node]:
    """The nodes `outputs` depend on, in topological order (the graph itself is not reordered)."""
    producers = {t.name: n for n in graph.nodes for t in n.outputs}
    missing = [name for name in outputs if name not in producers and name not in {t.name for t in graph.inputs}]
    if missing:
        raise ModelError(f"The model has no tensor {missing[0]!r} to train against.")
    order: list[gs.Node] = []
    state: dict[int, bool] = {}
    stack = [(producers[name], False) for name in reversed(outputs) if name in producers]
    while stack:  # iterative post-order DFS (graphs are a few hundred nodes deep)
        node, expanded = stack.pop()
        if expanded:
            if not state.get(id(node)):
                state[id(node)] = True
                order.append(node)
            continue
        if id(node) in state:
            continue
        state[id(node)] = False
        stack.append((node, True))
        for tensor in node.inputs:
            parent = producers.get(tensor.name)
            if parent is not None and id(parent) not in state:
                stack.append((parent, False))
    return order


def _dequantize_np(ints: np.ndarray, dq: gs.Node) -> np.ndarray:
    scale, zero = _qparams_np(dq, ints.ndim)
    return ((ints.astype(np.float64) - zero) * scale).astype(np.float32)


def _quantize_np(value: np.ndarray, dq: gs.Node, dtype: np.dtype) -> np.ndarray:
    scale, zero = _qparams_np(dq, value.ndim)
    info = np.iinfo(dtype)
    return np.clip(np.round(value.astype(np.float64) / scale) + zero, info.min, info.max).astype(dtype)


def _qparams_np(dq: gs.Node, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    scale = np.asarray(dq.inputs[1].values, dtype=np.float64)
    zero = np.asarray(dq.inputs[2].values, dtype=np.float64) if len(dq.inputs) > 2 else np.zeros_like(scale)
    if scale.ndim == 1 and ndim > 1:
        shape = [1] * ndim
        shape[int(dq.attrs.get("axis", 1))] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return scale, zero


def _per_axis(values: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    if values.ndim == 0:
        return values
    shape = [1] * like.ndim
    shape[axis] = -1
    return values.reshape(shape)


def _ints(tensor: torch.Tensor | None) -> list[int]:
    return [] if tensor is None else [int(v) for v in tensor.reshape(-1).tolist()]


def _pads(attrs: dict, spatial: int) -> tuple[list[int], bool]:
    """ONNX pads [b1,b2,...,e1,e2,...] -> (per-side list for F.pad, symmetric?)."""
    pads = list(attrs.get("pads", [0] * (2 * spatial)))
    begin, end = pads[:spatial], pads[spatial:]
    torch_pads = [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]
    return torch_pads, begin == end


def _conv(module: GraphModule, node: gs.Node, x, w, b=None):
    attrs = node.attrs
    torch_pads, symmetric = _pads(attrs, w.ndim - 2)
    padding = list(attrs.get("pads", [0, 0, 0, 0]))[: w.ndim - 2] if symmetric else 0
    if not symmetric:
        x = F.pad(x, torch_pads)
    if node.op == "ConvTranspose":
        if not symmetric:
            raise ModelError(f"{node.name}: asymmetric ConvTranspose padding is not supported for training.")
        return F.conv_transpose2d(x, w, b, stride=attrs.get("strides", 1), padding=padding,
                                  output_padding=attrs.get("output_padding", 0), groups=attrs.get("group", 1),
                                  dilation=attrs.get("dilations", 1))
    return F.conv2d(x, w, b, stride=attrs.get("strides", 1), padding=padding,
                    dilation=attrs.get("dilations", 1), groups=attrs.get("group", 1))


def _pool(node: gs.Node, x):
    attrs = node.attrs
    kernel = attrs["kernel_shape"]
    torch_pads, symmetric = _pads(attrs, len(kernel))
    strides = attrs.get("strides", [1] * len(kernel))
    ceil = bool(attrs.get("ceil_mode", 0))
    if node.op == "MaxPool":
        if symmetric:
            return F.max_pool2d(x, kernel, strides, attrs.get("pads", [0, 0])[:2], ceil_mode=ceil)
        return F.max_pool2d(F.pad(x, torch_pads, value=float("-inf")), kernel, strides, ceil_mode=ceil)
    include = bool(attrs.get("count_include_pad", 0))
    return F.avg_pool2d(F.pad(x, torch_pads) if not symmetric else x, kernel, strides,
                        attrs.get("pads", [0, 0])[:2] if symmetric else 0, ceil_mode=ceil, count_include_pad=include)


def _reshape(module: GraphModule, node: gs.Node, x, shape):
    target = _ints(shape)
    if not node.attrs.get("allowzero", 0):
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
    if target and x.shape[0] != module.batch and target[0] == module.batch:
        target[0] = x.shape[0]  # the export's batch of 1 follows the batch fed
    return x.reshape(target)


def _slice(x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) or list(range(len(starts)))
    steps = _ints(steps) or [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step < 0:
            raise ModelError("A Slice with a negative step is not supported for training.")
        size = x.shape[axis]
        start, end = (max(0, min(size, v + size if v < 0 else v)) for v in (start, end))
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


def _split(node: gs.Node, x, split=None):
    axis = node.attrs.get("axis", 0)
    sizes = _ints(split) or list(node.attrs.get("split", []))
    if not sizes:
        count = int(node.attrs.get("num_outputs", len(node.outputs)))
        chunk = -(-x.shape[axis] // count)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(count)]
    return list(torch.split(x, sizes, dim=axis))


def _resize(node: gs.Node, x, roi=None, scales=None, sizes=None):
    mode = node.attrs.get("mode", "nearest")
    if mode != "nearest":
        raise ModelError(f"{node.name}: Resize mode {mode!r} is not supported for training (nearest is).")
    if sizes is not None and sizes.numel():
        return F.interpolate(x, size=_ints(sizes)[2:], mode="nearest")
    factors = [float(v) for v in scales.reshape(-1).tolist()][2:]
    return F.interpolate(x, scale_factor=factors, mode="nearest")


def _quantize(node: gs.Node, x, scale, zero=None):
    info = np.iinfo(np.int8 if zero is None else np.dtype(str(zero.dtype).replace("torch.", "")))
    lo, hi = info.min, info.max
    axis = int(node.attrs.get("axis", 1))
    zero_f = zero.to(torch.float32) if zero is not None else torch.zeros(())
    q = round_ste(x / _per_axis(scale, x, axis)) + _per_axis(zero_f, x, axis)
    return torch.clamp(q, lo, hi)  # kept in float: the fake-quant's integers


def _dequantize(node: gs.Node, q, scale, zero=None):
    axis = int(node.attrs.get("axis", 1))
    zero_f = zero.to(torch.float32) if zero is not None else torch.zeros(())
    return (q.to(torch.float32) - _per_axis(zero_f, q, axis)) * _per_axis(scale, q, axis)


def _gemm(node: gs.Node, a, b, c=None):
    attrs = node.attrs
    a = a.t() if attrs.get("transA", 0) else a
    b = b.t() if attrs.get("transB", 0) else b
    out = attrs.get("alpha", 1.0) * (a @ b)
    return out if c is None else out + attrs.get("beta", 1.0) * c


def _batch_norm(node: gs.Node, x, scale, bias, mean, var):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=node.attrs.get("epsilon", 1e-5))


def _constant(node: gs.Node):
    value = node.attrs["value"]
    return torch.from_numpy(np.array(value.values if isinstance(value, gs.Constant) else value))


def _run_node(module: GraphModule, node: gs.Node, args: list) -> list[torch.Tensor]:
    op, attrs = node.op, node.attrs
    if op == "DequantizeLinear" and module.dequantized_source(node):
        # a float master weight: fake-quantize it against the stored integers' fixed scales (QAT-lite)
        return [_dequantize(node, _quantize(node, *args), *args[1:])]
    simple = {
        "Add": lambda: args[0] + args[1], "Sub": lambda: args[0] - args[1], "Mul": lambda: args[0] * args[1],
        "Div": lambda: args[0] / args[1] if args[0].is_floating_point() else torch.div(args[0], args[1],
                                                                                        rounding_mode="trunc"),
        "Pow": lambda: torch.pow(args[0], args[1]), "Sqrt": lambda: torch.sqrt(args[0]),
        "Exp": lambda: torch.exp(args[0]), "Sigmoid": lambda: torch.sigmoid(args[0]),
        "Tanh": lambda: torch.tanh(args[0]),
        "QuickGelu": lambda: args[0] * torch.sigmoid(attrs.get("alpha", 1.702) * args[0]),  # com.microsoft SiLU
        "Relu": lambda: F.relu(args[0]),
        "LeakyRelu": lambda: F.leaky_relu(args[0], attrs.get("alpha", 0.01)),
        "Cos": lambda: torch.cos(args[0]), "Sin": lambda: torch.sin(args[0]), "Identity": lambda: args[0],
        "MatMul": lambda: torch.matmul(args[0], args[1]),
        "Concat": lambda: torch.cat([a for a in args if a is not None], dim=attrs["axis"]),
        "Softmax": lambda: torch.softmax(args[0], dim=attrs.get("axis", -1)),
        "Transpose": lambda: args[0].permute(*attrs.get("perm", list(reversed(range(args[0].ndim))))),
        "Shape": lambda: torch.tensor(args[0].shape, dtype=torch.int64),
        "Gather": lambda: torch.index_select(args[0], attrs.get("axis", 0), args[1].reshape(-1).long())
        .reshape(args[0].shape[:attrs.get("axis", 0) % args[0].ndim] + args[1].shape
                 + args[0].shape[attrs.get("axis", 0) % args[0].ndim + 1:]),
        "Flatten": lambda: torch.flatten(args[0], attrs.get("axis", 1)) if attrs.get("axis", 1) > 0
        else args[0].reshape(1, -1),
        "GlobalAveragePool": lambda: args[0].mean(dim=tuple(range(2, args[0].ndim)), keepdim=True),
        "Unsqueeze": lambda: _unsqueeze(args[0], _ints(args[1]) if len(args) > 1 else list(attrs["axes"])),
        "Squeeze": lambda: _squeeze(args[0], _ints(args[1]) if len(args) > 1 else list(attrs.get("axes", []))),
        "Cast": lambda: args[0].to(_torch_dtype(attrs["to"])),
        "Conv": lambda: _conv(module, node, *args), "ConvTranspose": lambda: _conv(module, node, *args),
        "MaxPool": lambda: _pool(node, args[0]), "AveragePool": lambda: _pool(node, args[0]),
        "Reshape": lambda: _reshape(module, node, *args[:2]), "Slice": lambda: _slice(*args),
        "Resize": lambda: _resize(node, *args), "QuantizeLinear": lambda: _quantize(node, *args),
        "DequantizeLinear": lambda: _dequantize(node, *args), "Gemm": lambda: _gemm(node, *args),
        "BatchNormalization": lambda: _batch_norm(node, *args), "Constant": lambda: _constant(node),
    }
    if op == "Split":
        return _split(node, *args)
    return [simple[op]()]


def _unsqueeze(x, axes: list[int]):
    for axis in sorted(a % (x.ndim + len(axes)) for a in axes):
        x = x.unsqueeze(axis)
    return x


def _squeeze(x, axes: list[int]):
    return x.squeeze() if not axes else x.squeeze(tuple(a % x.ndim for a in axes))


def _torch_dtype(onnx_type: int) -> torch.dtype:
    import onnx

    return getattr(torch, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type)).name)
