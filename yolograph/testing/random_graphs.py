"""Seeded random CNN graphs built from the ops YOLO models use, for fuzzing passes against ONNX Runtime.

`random_model(seed)` returns a small static-shape model: one or two NCHW image inputs, then a random
sequence of blocks drawn from Conv (with or without bias, grouped, depthwise, dilated, asymmetric
pads, shared weights), ConvTranspose, BatchNormalization, SiLU as Sigmoid*Mul, Add, Mul, Concat,
Split, MaxPool, Resize, Reshape, Transpose, Slice, Softmax, Identity/Dropout, a DFL-style decode,
constant subgraphs and Shape-computed Reshapes. Tensors the last block does not use are either
extra graph outputs (some also feeding later nodes) or dead branches. The same seed always gives
the same graph, so a failure is reproduced by its seed alone.

Shapes are tracked while building and checked by ONNX's full checker; a graph this module builds
runs on ONNX Runtime (a graph that does not is a bug here, not in a pass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from yolograph.ir.model import Model

OPSETS = (13, 14, 15, 16, 17, 18, 19, 20, 21)
MAX_CHANNELS, MAX_SIDE = 32, 40


@dataclass
class Activation:
    """A float tensor the generator can build on, with its static shape."""

    name: str
    shape: tuple[int, ...]


@dataclass
class GraphBuilder:
    """Accumulates nodes, initializers and the pool of live activations for one random graph."""

    rng: np.random.Generator
    opset: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    pool: list[Activation] = field(default_factory=list)
    outputs: list[Activation] = field(default_factory=list)
    weights_by_shape: dict[tuple[int, ...], str] = field(default_factory=dict)
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        name = self.fresh(prefix)
        self.initializers[name] = np.asarray(value)
        return name

    def node(self, op: str, inputs: list[str], outputs: int = 1, **attrs) -> list[str]:
        names = [self.fresh(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=self.fresh(op), **attrs))
        return names

    def add(self, name: str, shape: tuple[int, ...]) -> Activation:
        tensor = Activation(name, tuple(int(d) for d in shape))
        self.pool.append(tensor)
        return tensor

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def normal(self, shape, scale: float) -> np.ndarray:
        return self.rng.normal(0.0, scale, shape).astype(np.float32)


# -- blocks: each takes the builder and an input activation, returns the activation it made ------------


def conv(b: GraphBuilder, x: Activation, *, cout: int | None = None, kernel: int | None = None) -> Activation:
    n, c, h, w = x.shape
    mode = b.pick(["dense", "dense", "depthwise", "grouped"]) if cout is None else "dense"
    divisors = [g for g in range(2, c + 1) if c % g == 0]
    if mode == "depthwise":
        groups, cout = c, c * b.pick([1, 1, 2])
    elif mode == "grouped" and divisors and cout is None:
        groups = b.pick(divisors)
        cout = groups * int(b.rng.integers(1, 4))
    else:
        groups = 1
        cout = cout or int(b.rng.integers(1, 25))
    if cout % groups:
        groups = 1
    k = kernel or b.pick([1, 1, 3, 3, 5])
    stride = b.pick([1, 1, 2])
    dilation = 2 if k == 3 and b.chance(0.1) else 1
    span = dilation * (k - 1) + 1
    pads = [span // 2] * 4 if not b.chance(0.2) else [int(b.rng.integers(0, k)) for _ in range(4)]
    oh = (h + pads[0] + pads[2] - span) // stride + 1
    ow = (w + pads[1] + pads[3] - span) // stride + 1
    if oh < 1 or ow < 1:
        k, stride, dilation, pads, oh, ow = 1, 1, 1, [0] * 4, h, w
    wshape = (cout, c // groups, k, k)
    if wshape in b.weights_by_shape and b.chance(0.3):  # two convs sharing one weight initializer
        weight = b.weights_by_shape[wshape]
    else:
        weight = b.const("w", b.normal(wshape, 1.0 / np.sqrt(c // groups * k * k)))
        b.weights_by_shape[wshape] = weight
    inputs = [x.name, weight]
    if b.chance(0.5):
        inputs.append(b.const("b", b.normal((cout,), 0.5)))
    attrs = dict(group=groups, kernel_shape=[k, k], pads=pads, strides=[stride, stride])
    if dilation > 1:
        attrs["dilations"] = [dilation, dilation]
    (out,) = b.node("Conv", inputs, **attrs)
    return b.add(out, (n, cout, oh, ow))


def conv_transpose(b: GraphBuilder, x: Activation) -> Activation:
    n, c, h, w = x.shape
    groups = c if b.chance(0.3) else 1
    per_group = int(b.rng.integers(1, 9)) if groups == 1 else b.pick([1, 2])
    cout = per_group * groups
    k = b.pick([2, 3, 4])
    stride = b.pick([1, 2]) if max(h, w) * 2 <= MAX_SIDE else 1
    pad = int(b.rng.integers(0, k // 2 + 1))
    out_pad = int(b.rng.integers(0, stride)) if stride > 1 else 0
    if min(h, w) == 1 or (min(h, w) - 1) * stride + k - 2 * pad < 1:
        pad = 0
    oh, ow = ((d - 1) * stride - 2 * pad + k + out_pad for d in (h, w))
    inputs = [x.name, b.const("wt", b.normal((c, per_group, k, k), 1.0 / np.sqrt(c // groups * k * k)))]
    if b.chance(0.5):
        inputs.append(b.const("bt", b.normal((cout,), 0.5)))
    attrs = dict(group=groups, kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride])
    if out_pad:
        attrs["output_padding"] = [out_pad, out_pad]
    (out,) = b.node("ConvTranspose", inputs, **attrs)
    return b.add(out, (n, cout, oh, ow))


def batch_norm(b: GraphBuilder, x: Activation) -> Activation:
    c = x.shape[1]
    params = [
        b.const("gamma", b.rng.uniform(0.5, 1.5, c).astype(np.float32)),
        b.const("beta", b.normal((c,), 0.3)),
        b.const("mean", b.normal((c,), 0.5)),
        b.const("var", b.rng.uniform(0.2, 2.0, c).astype(np.float32)),
    ]
    (out,) = b.node("BatchNormalization", [x.name, *params], epsilon=b.pick([1e-5, 1e-3]))
    return b.add(out, x.shape)


def silu(b: GraphBuilder, x: Activation) -> Activation:
    (sig,) = b.node("Sigmoid", [x.name])
    (out,) = b.node("Mul", [x.name, sig] if b.chance(0.5) else [sig, x.name])
    return b.add(out, x.shape)


def conv_block(b: GraphBuilder, x: Activation) -> Activation:
    """Conv -> BN -> SiLU, ultralytics' Conv module (BN and SiLU each sometimes left out)."""
    y = conv(b, x)
    if b.chance(0.7):
        y = batch_norm(b, y)
    return silu(b, y) if b.chance(0.7) else y


def binary(b: GraphBuilder, x: Activation) -> Activation:
    op = b.pick(["Add", "Mul"])
    same = [t for t in b.pool if t.shape == x.shape and t.name != x.name]
    if same and b.chance(0.6):
        other = b.pick(same).name
    else:
        shape = b.pick([(1, x.shape[1], 1, 1), (), x.shape, (x.shape[-1],)])
        other = b.const("k", b.normal(shape, 0.5) + (1.0 if op == "Mul" else 0.0))
    inputs = [x.name, other] if b.chance(0.5) else [other, x.name]
    (out,) = b.node(op, inputs)
    return b.add(out, x.shape)


def concat(b: GraphBuilder, x: Activation) -> Activation:
    axis = b.pick([1, 1, 1, 2, 3])
    others = [t for t in b.pool if all(t.shape[i] == x.shape[i] for i in range(4) if i != axis)]
    parts = [x] + [b.pick(others) for _ in range(int(b.rng.integers(1, 3)))]
    shape = list(x.shape)
    shape[axis] = sum(t.shape[axis] for t in parts)
    if shape[axis] > 3 * MAX_CHANNELS:
        return x
    (out,) = b.node("Concat", [t.name for t in parts], axis=axis - 4 if b.chance(0.3) else axis)
    return b.add(out, tuple(shape))


def split(b: GraphBuilder, x: Activation) -> Activation:
    axes = [a for a in (1, 2, 3) if x.shape[a] >= 2]
    if not axes:
        return x
    axis = b.pick(axes)
    size = x.shape[axis]
    cut = sorted(set(int(v) for v in b.rng.integers(1, size, int(b.rng.integers(1, 3)))))
    sizes = [e - s for s, e in zip([0, *cut], [*cut, size])]
    outs = b.node("Split", [x.name, b.const("split", np.array(sizes, np.int64))], outputs=len(sizes), axis=axis)
    made = []
    for name, part in zip(outs, sizes):
        shape = list(x.shape)
        shape[axis] = part
        made.append(b.add(name, tuple(shape)))
    return b.pick(made)


def max_pool(b: GraphBuilder, x: Activation) -> Activation:
    n, c, h, w = x.shape
    k = b.pick([1, 2, 3, 5])
    stride = b.pick([1, 2])
    pad = k // 2 if stride == 1 else int(b.rng.integers(0, k // 2 + 1))
    ceil = stride > 1 and b.chance(0.3)
    if ceil and any((-(-(d + 2 * pad - k) // stride)) * stride >= d + pad for d in (h, w)):
        ceil = False  # a last window starting in the padding: runtimes and shape inference disagree
    round_ = np.ceil if ceil else np.floor
    oh, ow = (int(round_((d + 2 * pad - k) / stride)) + 1 for d in (h, w))
    if min(oh, ow) < 1 or k > h + 2 * pad or k > w + 2 * pad:
        return x
    (out,) = b.node("MaxPool", [x.name], kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride],
                    ceil_mode=int(ceil))
    return b.add(out, (n, c, oh, ow))


def resize(b: GraphBuilder, x: Activation) -> Activation:
    n, c, h, w = x.shape
    if 2 * max(h, w) > MAX_SIDE:
        return x
    mode = b.pick(["nearest", "nearest", "linear"])
    attrs = {"mode": mode}
    if mode == "nearest":
        attrs.update(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if b.chance(0.5):
        inputs = [x.name, "", b.const("scales", np.array([1, 1, 2, 2], np.float32))]
    else:
        inputs = [x.name, "", "", b.const("sizes", np.array([n, c, 2 * h, 2 * w], np.int64))]
    (out,) = b.node("Resize", inputs, **attrs)
    return b.add(out, (n, c, 2 * h, 2 * w))


def transpose(b: GraphBuilder, x: Activation) -> Activation:
    perm = [0, *(1 + b.rng.permutation(3))]
    (out,) = b.node("Transpose", [x.name], perm=[int(p) for p in perm])
    return b.add(out, tuple(x.shape[p] for p in perm))


def reshape(b: GraphBuilder, x: Activation) -> Activation:
    """A 4-D -> 4-D reshape; the target is a constant (with 0 / -1 sometimes) or computed from Shape."""
    n, c, h, w = x.shape
    if b.chance(0.3):  # Shape -> Slice -> Concat: x as [N, C, H*W, 1], a shape cleanup must fold
        (shape,) = b.node("Shape", [x.name])
        (head,) = b.node("Slice", [shape, b.const("s0", np.array([0], np.int64)), b.const("s2", np.array([2], np.int64))])
        (target,) = b.node("Concat", [head, b.const("tail", np.array([-1, 1], np.int64))], axis=0)
        (out,) = b.node("Reshape", [x.name, target])
        return b.add(out, (n, c, h * w, 1))
    options = [(n, c, w, h), (n, c * h, w, 1), (n, 1, c, h * w), (n, c, h * w, 1)]
    if c % 2 == 0:
        options.append((n, c // 2, 2 * h, w))
    shape = b.pick(options)
    target = np.array(shape, np.int64)
    if b.chance(0.3):
        target[int(b.rng.integers(1, 4))] = -1
    elif shape[1] == c and b.chance(0.3):
        target[1] = 0  # 0 copies the input's dimension
    (out,) = b.node("Reshape", [x.name, b.const("shape", target)])
    return b.add(out, shape)


def slice_(b: GraphBuilder, x: Activation) -> Activation:
    axes = [a for a in (1, 2, 3) if x.shape[a] >= 2]
    if not axes:
        return x
    axis = b.pick(axes)
    size = x.shape[axis]
    step = b.pick([1, 1, 2, -1])
    start, end = sorted(int(v) for v in b.rng.integers(0, size + 1, 2))
    if start == end:
        start, end = 0, size
    if step < 0:
        start, end = end - 1, start - 1 if start > 0 else -size - 1
    length = len(range(size)[slice(start, end, step)])
    if length < 1:
        return x
    shape = list(x.shape)
    shape[axis] = length
    inputs = [x.name, b.const("st", np.array([start], np.int64)), b.const("en", np.array([end], np.int64)),
              b.const("ax", np.array([axis - 4 if b.chance(0.3) else axis], np.int64)),
              b.const("sp", np.array([step], np.int64))]
    (out,) = b.node("Slice", inputs)
    return b.add(out, tuple(shape))


def softmax(b: GraphBuilder, x: Activation) -> Activation:
    (out,) = b.node("Softmax", [x.name], axis=b.pick([1, 2, 3, -1, -3]))
    return b.add(out, x.shape)


def no_op(b: GraphBuilder, x: Activation) -> Activation:
    op = b.pick(["Identity", "Identity", "Dropout"])
    (out,) = b.node(op, [x.name])
    return b.add(out, x.shape)


def constant_subgraph(b: GraphBuilder, x: Activation) -> Activation:
    """x * f(constant): f is a small chain of ops on constants only, which cleanup folds away."""
    c = x.shape[1]
    (value,) = b.node("Add", [b.const("ca", b.normal((1, c, 1, 1), 1.0)), b.const("cb", b.normal((1, c, 1, 1), 1.0))])
    (value,) = b.node(b.pick(["Sigmoid", "Relu", "Neg"]), [value])
    if b.chance(0.5):
        (value,) = b.node("Transpose", [value], perm=[0, 1, 3, 2])
    (out,) = b.node("Mul", [x.name, value])
    return b.add(out, x.shape)


def dfl(b: GraphBuilder, x: Activation) -> Activation:
    """The YOLOv8 DFL decode: conv to 4*R channels, Reshape [N,4,R,A], Transpose, Softmax, 1x1 Conv, Reshape."""
    n, _, h, w = x.shape
    bins = b.pick([4, 8, 16])
    y = conv(b, x, cout=4 * bins, kernel=1)
    anchors = y.shape[2] * y.shape[3]
    (r,) = b.node("Reshape", [y.name, b.const("dfl_shape", np.array([n, 4, bins, anchors], np.int64))])
    (t,) = b.node("Transpose", [r], perm=[0, 2, 1, 3])
    (s,) = b.node("Softmax", [t], axis=1)
    weight = np.arange(bins, dtype=np.float32) if b.chance(0.7) else b.normal((bins,), 1.0)
    (e,) = b.node("Conv", [s, b.const("dfl_w", weight.reshape(1, bins, 1, 1))], kernel_shape=[1, 1])
    if b.chance(0.5):
        (out,) = b.node("Reshape", [e, b.const("box_shape", np.array([n, 4, anchors], np.int64))])
        b.outputs.append(Activation(out, (n, 4, anchors)))
        return x
    (out,) = b.node("Reshape", [e, b.const("box_shape", np.array([n, 4, y.shape[2], y.shape[3]], np.int64))])
    return b.add(out, (n, 4, y.shape[2], y.shape[3]))


def yolo_output(b: GraphBuilder, x: Activation) -> Activation:
    """A head-style 3-D output: Reshape [N, C, H*W], Concat of a few along the anchors, some with Sigmoid."""
    n, c, h, w = x.shape
    parts = [t for t in b.pool if t.shape[1] == c][-3:]
    names, anchors = [], 0
    for part in parts:
        (flat,) = b.node("Reshape", [part.name, b.const("flat", np.array([n, c, -1], np.int64))])
        names.append(flat)
        anchors += part.shape[2] * part.shape[3]
    (out,) = b.node("Concat", names, axis=2) if len(names) > 1 else (names[0],)
    if b.chance(0.5):
        (out,) = b.node("Sigmoid", [out])
    b.outputs.append(Activation(out, (n, c, anchors)))
    return x


BLOCKS: dict[str, tuple[Callable[[GraphBuilder, Activation], Activation], float]] = {
    "conv_block": (conv_block, 6.0),
    "conv": (conv, 2.0),
    "conv_transpose": (conv_transpose, 1.0),
    "batch_norm": (batch_norm, 1.0),
    "silu": (silu, 1.0),
    "binary": (binary, 2.0),
    "concat": (concat, 1.5),
    "split": (split, 1.0),
    "max_pool": (max_pool, 1.0),
    "resize": (resize, 1.0),
    "transpose": (transpose, 0.7),
    "reshape": (reshape, 0.7),
    "slice": (slice_, 0.7),
    "softmax": (softmax, 0.5),
    "no_op": (no_op, 0.5),
    "constant_subgraph": (constant_subgraph, 0.7),
    "dfl": (dfl, 0.7),
    "yolo_output": (yolo_output, 0.5),
}


def random_model(seed: int, max_blocks: int = 12) -> Model:
    """The random model of `seed` (deterministic), as yolograph's IR."""
    proto = random_onnx(seed, max_blocks)
    return Model.from_onnx(proto, source=None)


def random_onnx(seed: int, max_blocks: int = 12) -> onnx.ModelProto:
    """The random graph of `seed` as an ONNX model (checked with ONNX's full checker)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(rng, opset=int(rng.choice(OPSETS)))
    batch = 2 if b.chance(0.1) else 1
    h, w = (int(v) for v in rng.integers(4, 25, 2))
    inputs = [Activation("images", (batch, int(b.pick([1, 3, 3, 3, 4])), h, w))]
    if b.chance(0.1):
        inputs.append(Activation("extra", (batch, int(b.pick([1, 2, 3, 3])), h, w)))
    b.pool.extend(inputs)
    names, weights = list(BLOCKS), np.array([BLOCKS[k][1] for k in BLOCKS])
    x = inputs[0]
    for _ in range(int(rng.integers(2, max_blocks + 1))):
        block = BLOCKS[names[int(rng.choice(len(names), p=weights / weights.sum()))]][0]
        source = x if b.chance(0.7) else b.pick(b.pool)
        if len(source.shape) != 4 or source.shape[1] > MAX_CHANNELS or max(source.shape[2:]) > MAX_SIDE:
            source = conv(b, x if max(x.shape[1:]) <= MAX_SIDE else inputs[0])
        x = block(b, source)
    outputs = [x] + b.outputs
    extra = [t for t in b.pool if t not in outputs and t not in inputs]
    for tensor in rng.permutation(len(extra))[: int(rng.integers(0, 3))]:
        outputs.append(extra[int(tensor)])  # an intermediate tensor as an output too; the rest are dead
    if all(t in inputs for t in outputs):
        outputs = [silu(b, x)]
    return _to_onnx(b, inputs, outputs, seed)


def _to_onnx(b: GraphBuilder, inputs: list[Activation], outputs: list[Activation], seed: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        b.nodes,
        f"random_{seed}",
        [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape)) for t in inputs],
        [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape)) for t in _unique(outputs)],
        [numpy_helper.from_array(v, k) for k, v in b.initializers.items()],
    )
    opsets = [helper.make_opsetid("", b.opset)]
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _unique(tensors: list[Activation]) -> list[Activation]:
    seen, kept = set(), []
    for tensor in tensors:
        if tensor.name not in seen:
            seen.add(tensor.name)
            kept.append(tensor)
    return kept
