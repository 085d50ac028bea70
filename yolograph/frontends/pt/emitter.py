"""Graph emission for checkpoint lowering: nodes, initializers and the static shape of every value.

`Emitter` appends onnx-graphsurgeon nodes named the way torch.onnx scopes them
(`/model.4/cv1/conv/Conv`), initializers named by their ultralytics state-dict key
(`model.4.cv1.conv.weight`), and tracks each tensor's static shape alongside (`Value`), because
the lowering needs shapes while it builds (attention reshapes, anchor grids) and a YOLO graph
at a fixed image size is fully static.

The torch primitives every ultralytics block is made of (Conv2d, BatchNorm2d, activations,
ConvTranspose2d, MaxPool2d, nearest Upsample) are lowered here from their inert records, with
every hyper-parameter read from the record, never assumed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.errors import ModelError
from yolograph.frontends.pt.checkpoint import ModuleRecord

# torch.onnx writes BatchNormalization's momentum as 1 - torch momentum (ultralytics: 0.03).
DEFAULT_BN_MOMENTUM = 0.03


@dataclass
class Value:
    """A graph tensor and its static shape."""

    var: gs.Variable
    shape: tuple[int, ...]


class Emitter:
    """Appends uniquely named nodes and initializers; every output carries its shape."""

    def __init__(self) -> None:
        self.nodes: list[gs.Node] = []
        self._node_names: Counter[str] = Counter()
        self._constants: dict[str, gs.Constant] = {}

    def op(
        self, op: str, scope: str, inputs: Sequence[Value | gs.Tensor], shape: Sequence[int], attrs: dict | None = None
    ) -> Value:
        """One node with one float output of `shape`."""
        return self.ops(op, scope, inputs, [shape], attrs)[0]

    def ops(
        self,
        op: str,
        scope: str,
        inputs: Sequence[Value | gs.Tensor],
        shapes: Sequence[Sequence[int]],
        attrs: dict | None = None,
    ) -> list[Value]:
        # torch.onnx names a node `<module scope>/<Op>`; callers may pass the scope with the op already on it.
        name = self._unique(scope if scope.rsplit("/", 1)[-1] == op else f"{scope}/{op}")
        outs = [
            gs.Variable(f"{name}_output_{k}", dtype=np.float32, shape=[int(d) for d in shape])
            for k, shape in enumerate(shapes)
        ]
        tensors = [item.var if isinstance(item, Value) else item for item in inputs]
        self.nodes.append(gs.Node(op, name, attrs=attrs or {}, inputs=tensors, outputs=outs))
        return [Value(var, tuple(int(d) for d in shape)) for var, shape in zip(outs, shapes)]

    def constant(self, name: str, value: np.ndarray) -> gs.Constant:
        """An initializer; names are made unique (`name`, `name_1`, ...)."""
        base, index = name, 0
        while name in self._constants:
            index += 1
            name = f"{base}_{index}"
        const = gs.Constant(name, np.ascontiguousarray(value))
        self._constants[name] = const
        return const

    def int64(self, scope: str, values: Sequence[int]) -> gs.Constant:
        """An int64 vector initializer (shapes, split sizes, slice bounds)."""
        return self.constant(f"{scope}/const", np.array(list(values), dtype=np.int64))

    def scalar(self, scope: str, value: float) -> gs.Constant:
        return self.constant(f"{scope}/const", np.array(value, dtype=np.float32))

    def _unique(self, name: str) -> str:
        count = self._node_names[name]
        self._node_names[name] += 1
        return name if count == 0 else f"{name}_{count}"


# -- weights ----------------------------------------------------------------------------------------


def tensor(record: ModuleRecord, name: str, key: str, shape: Sequence[int] | None = None) -> np.ndarray:
    """Parameter or buffer `name` of `record` as float32; ModelError when absent, misshapen or non-finite."""
    value = record.parameters.get(name)
    if value is None:
        value = record.buffers.get(name)
    if not isinstance(value, np.ndarray):
        raise ModelError(f"The checkpoint's {record.type_name} at {key} has no tensor {name!r}; it is malformed.")
    if not np.issubdtype(value.dtype, np.floating):
        raise ModelError(f"The checkpoint's {key}.{name} has dtype {value.dtype}; weights must be floating point.")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ModelError(
            f"The checkpoint's {key}.{name} has shape {list(value.shape)} where the module needs {list(shape)}; "
            "it is malformed."
        )
    if not np.all(np.isfinite(value)):
        raise ModelError(f"The checkpoint's {key}.{name} holds NaN or infinite values; the weights are broken.")
    return value.astype(np.float32)


def child(record: ModuleRecord, name: str, key: str) -> ModuleRecord:
    """Submodule `name` of `record`; ModelError naming the missing part."""
    value = record.children.get(name)
    if not isinstance(value, ModuleRecord):
        raise ModelError(
            f"The checkpoint's {record.type_name} at {key} has no submodule {name!r}; it is malformed or a "
            "variant yolograph does not know."
        )
    return value


def ordered_children(record: ModuleRecord) -> list[tuple[str, ModuleRecord]]:
    """A Sequential/ModuleList's modules in forward order."""
    return [(name, module) for name, module in record.children.items() if isinstance(module, ModuleRecord)]


def pair(value: object, what: str, key: str) -> tuple[int, int]:
    """An int or 2-tuple hyper-parameter as (height, width)."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ModelError(f"unsupported: {what} {value!r} at {key}; yolograph lowers integer kernel/stride/padding values.")


def _window(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


# -- torch primitives -------------------------------------------------------------------------------


def conv2d(em: Emitter, x: Value, record: ModuleRecord, key: str, scope: str) -> Value:
    """nn.Conv2d (zero padding, optional bias) as an ONNX Conv."""
    if record.get("padding_mode", "zeros") != "zeros" or record.get("transposed"):
        raise ModelError(f"unsupported: Conv2d padding mode {record.get('padding_mode')!r} at {key}; zeros only.")
    weight = tensor(record, "weight", key)
    (kh, kw), (sh, sw) = pair(record.get("kernel_size"), "kernel", key), pair(record.get("stride"), "stride", key)
    (ph, pw), (dh, dw) = pair(record.get("padding"), "padding", key), pair(record.get("dilation", 1), "dilation", key)
    groups = int(record.get("groups", 1))
    if weight.ndim != 4 or weight.shape[2:] != (kh, kw) or weight.shape[1] * groups != x.shape[1]:
        raise ModelError(
            f"The checkpoint's Conv2d at {key} has weight {list(weight.shape)} for a {x.shape[1]}-channel input "
            f"(groups {groups}); it is malformed."
        )
    inputs: list = [x, em.constant(f"{key}.weight", weight)]
    if record.parameters.get("bias") is not None:
        inputs.append(em.constant(f"{key}.bias", tensor(record, "bias", key, (weight.shape[0],))))
    n, _, h, w = x.shape
    shape = (n, weight.shape[0], _window(h, kh, sh, ph, dh), _window(w, kw, sw, pw, dw))
    attrs = {
        "dilations": [dh, dw],
        "group": groups,
        "kernel_shape": [kh, kw],
        "pads": [ph, pw, ph, pw],
        "strides": [sh, sw],
    }
    return em.op("Conv", f"{scope}/Conv", inputs, shape, attrs)


def conv_transpose2d(em: Emitter, x: Value, record: ModuleRecord, key: str, scope: str) -> Value:
    """nn.ConvTranspose2d as an ONNX ConvTranspose (the Segment head's Proto upsampling)."""
    weight = tensor(record, "weight", key)
    (kh, kw), (sh, sw) = pair(record.get("kernel_size"), "kernel", key), pair(record.get("stride"), "stride", key)
    (ph, pw), (dh, dw) = pair(record.get("padding"), "padding", key), pair(record.get("dilation", 1), "dilation", key)
    (oh, ow) = pair(record.get("output_padding", 0), "output padding", key)
    groups = int(record.get("groups", 1))
    if weight.ndim != 4 or weight.shape[0] != x.shape[1]:
        raise ModelError(f"The checkpoint's ConvTranspose2d at {key} does not fit its input; it is malformed.")
    inputs: list = [x, em.constant(f"{key}.weight", weight)]
    if record.parameters.get("bias") is not None:
        inputs.append(em.constant(f"{key}.bias", tensor(record, "bias", key)))
    n, _, h, w = x.shape
    out_h = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oh + 1
    out_w = (w - 1) * sw - 2 * pw + dw * (kw - 1) + ow + 1
    attrs = {
        "dilations": [dh, dw], "group": groups, "kernel_shape": [kh, kw], "output_padding": [oh, ow],
        "pads": [ph, pw, ph, pw], "strides": [sh, sw],
    }  # fmt: skip
    return em.op("ConvTranspose", f"{scope}/ConvTranspose", inputs, (n, weight.shape[1] * groups, out_h, out_w), attrs)


def batchnorm2d(em: Emitter, x: Value, record: ModuleRecord, key: str, scope: str) -> Value:
    """nn.BatchNorm2d in eval mode (running statistics), kept unfused so `fold-bn` applies."""
    channels = x.shape[1]
    if not record.get("track_running_stats", True):
        raise ModelError(f"unsupported: BatchNorm2d without running statistics at {key}.")
    ones, zeros = np.ones(channels, np.float32), np.zeros(channels, np.float32)
    affine = record.get("affine", True)
    params = [
        tensor(record, "weight", key, (channels,)) if affine else ones,
        tensor(record, "bias", key, (channels,)) if affine else zeros,
        tensor(record, "running_mean", key, (channels,)),
        tensor(record, "running_var", key, (channels,)),
    ]
    names = ("weight", "bias", "running_mean", "running_var")
    eps = float(record.get("eps", 1e-5))
    momentum = record.get("momentum")
    attrs = {"epsilon": eps, "momentum": 1.0 - float(DEFAULT_BN_MOMENTUM if momentum is None else momentum)}
    inputs = [x] + [em.constant(f"{key}.{n}", p) for n, p in zip(names, params)]
    return em.op("BatchNormalization", f"{scope}/BatchNormalization", inputs, x.shape, attrs)


ACTIVATIONS = ("SiLU", "ReLU", "Sigmoid", "Identity")


def activation(em: Emitter, x: Value, record: ModuleRecord | None, key: str, scope: str) -> Value:
    """The activations ultralytics Conv uses: SiLU (as Sigmoid, Mul, like torch.onnx), ReLU, Sigmoid, Identity."""
    kind = record.type_name if isinstance(record, ModuleRecord) else "Identity"
    if kind == "SiLU":
        sig = em.op("Sigmoid", scope, [x], x.shape)
        return em.op("Mul", scope, [x, sig], x.shape)
    if kind == "ReLU":
        return em.op("Relu", scope, [x], x.shape)
    if kind == "Sigmoid":
        return em.op("Sigmoid", scope, [x], x.shape)
    if kind == "Identity":
        return x
    raise ModelError(f"unsupported: activation {kind} at {key}; yolograph lowers {', '.join(ACTIVATIONS)}.")


def maxpool2d(em: Emitter, x: Value, record: ModuleRecord, key: str, scope: str) -> Value:
    (kh, kw), (sh, sw) = pair(record.get("kernel_size"), "kernel", key), pair(record.get("stride"), "stride", key)
    (ph, pw), (dh, dw) = pair(record.get("padding"), "padding", key), pair(record.get("dilation", 1), "dilation", key)
    if record.get("ceil_mode") or record.get("return_indices"):
        raise ModelError(f"unsupported: MaxPool2d with ceil_mode/return_indices at {key}.")
    n, c, h, w = x.shape
    shape = (n, c, _window(h, kh, sh, ph, dh), _window(w, kw, sw, pw, dw))
    attrs = {
        "ceil_mode": 0,
        "dilations": [dh, dw],
        "kernel_shape": [kh, kw],
        "pads": [ph, pw, ph, pw],
        "strides": [sh, sw],
    }
    return em.op("MaxPool", f"{scope}/MaxPool", [x], shape, attrs)


def upsample(em: Emitter, x: Value, record: ModuleRecord, key: str, scope: str) -> Value:
    """nn.Upsample(scale_factor=k, mode='nearest') as Resize (asymmetric, floor), as torch.onnx writes it."""
    factor = record.get("scale_factor")
    if record.get("mode") != "nearest" or record.get("size") is not None or not isinstance(factor, (int, float)):
        raise ModelError(
            f"unsupported: Upsample at {key} with mode {record.get('mode')!r}, size {record.get('size')!r}, "
            f"scale {factor!r}; yolograph lowers nearest upsampling by an integer factor."
        )
    if float(factor) != int(factor) or int(factor) < 1:
        raise ModelError(f"unsupported: Upsample scale {factor} at {key}; yolograph lowers integer factors.")
    k = int(factor)
    scales = em.constant(f"{scope}/scales", np.array([1, 1, k, k], dtype=np.float32))
    attrs = {
        "coordinate_transformation_mode": "asymmetric",
        "cubic_coeff_a": -0.75,
        "mode": "nearest",
        "nearest_mode": "floor",
    }
    n, c, h, w = x.shape
    return em.op("Resize", f"{scope}/Resize", [x, gs.Variable.empty(), scales], (n, c, h * k, w * k), attrs)


def concat(em: Emitter, values: Sequence[Value], scope: str, axis: int = 1) -> Value:
    rank = len(values[0].shape)
    axis = axis % rank
    shape = list(values[0].shape)
    shape[axis] = sum(v.shape[axis] for v in values)
    return em.op("Concat", scope, list(values), shape, {"axis": axis})


def reshape(em: Emitter, x: Value, shape: Sequence[int], scope: str) -> Value:
    """Reshape to a fully static shape (no -1), so every downstream shape is known."""
    if int(np.prod(shape)) != int(np.prod(x.shape)):
        raise AssertionError(f"reshape {x.shape} -> {shape}")  # a lowering bug, not bad input
    return em.op("Reshape", scope, [x, em.int64(scope, shape)], shape, {"allowzero": 0})


def split(em: Emitter, x: Value, sizes: Sequence[int], axis: int, scope: str) -> list[Value]:
    shapes = []
    for size in sizes:
        shape = list(x.shape)
        shape[axis] = size
        shapes.append(shape)
    return em.ops("Split", scope, [x, em.int64(scope, sizes)], shapes, {"axis": axis})


def slice_axis(em: Emitter, x: Value, start: int, end: int, axis: int, scope: str) -> Value:
    shape = list(x.shape)
    shape[axis] = end - start
    inputs = [x, em.int64(scope, [start]), em.int64(scope, [end]), em.int64(scope, [axis])]
    return em.op("Slice", scope, inputs, shape)


def broadcast_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in np.broadcast_shapes(tuple(a), tuple(b)))


def binary(em: Emitter, op: str, a: Value | gs.Constant, b: Value | gs.Constant, scope: str) -> Value:
    """Add/Sub/Mul/Div with numpy broadcasting of the two shapes."""
    shape_a = a.shape if isinstance(a, Value) else a.values.shape
    shape_b = b.shape if isinstance(b, Value) else b.values.shape
    return em.op(op, scope, [a, b], broadcast_shape(shape_a, shape_b))
