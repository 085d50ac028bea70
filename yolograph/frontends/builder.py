"""Built-in YOLOv8 builder: emits the detection graph the way ultralytics exports it, BN unfused.

`build_yolov8(spec, weights)` walks the yolov8.yaml layer table (yolov8_arch.YOLOV8_LAYERS) and emits
Conv -> BatchNormalization -> Sigmoid -> Mul (SiLU) blocks, C2f, SPPF, nearest Resize, Concat and the
decoupled Detect head with DFL and box decode, using the node, tensor and weight names of an
ultralytics 8.4 ONNX export made without Conv+BN fusion (fixtures/yolov8n-rand-bn.onnx). Passes
therefore see the same graph whether a model came from a file, a checkpoint or this builder.

One deliberate difference from the export: the export computes the two `chunk` slice bounds of the
box decode at run time (Shape -> Gather -> Add -> Div -> Mul, a torch tracing artefact); here they
are constants, so the graph is fully static. Every compute op and tensor shape is otherwise the same.

Weights come either from an ultralytics state dict (`weights`, keys like `model.0.conv.weight`) or
from a seeded generator. Random BN statistics are calibrated the way the fixtures were made: a numpy
forward pass on a random image measures each BN's input (mu, sigma^2) and sets running_mean =
mu + z*sigma, running_var = u*sigma^2 with random z, u, so activations stay O(1) through the network
while every BN parameter is far from the identity (a BN-folding bug cannot hide).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from numpy.lib.stride_tricks import sliding_window_view

from yolograph.errors import ModelError
from yolograph.frontends.yolov8_arch import (
    BN_EPSILON,
    BN_MOMENTUM,
    STRIDES,
    YOLOV8_LAYERS,
    YOLOV8_SCALES,
    YoloV8Spec,
    detect_widths,
    layer_sources,
    scaled_channels,
    scaled_repeats,
)
from yolograph.ir.model import Model
from yolograph.progress import track

__all__ = ["YoloV8Spec", "build_yolov8", "build_builtin", "CALIBRATION_SIZE"]

OPSET = 17
IR_VERSION = 8
# Random BN statistics are calibrated on one uniform-noise image of this size, independent of imgsz so
# that a seed gives the same weights at every input size. At 128 the P5 maps are 4x4, mostly border,
# and their statistics do not transfer: per-layer std reached ~300 at 640. At 320 the largest
# per-layer std at 640 is ~6 (n) and ~4 (s); building x takes ~5 s.
CALIBRATION_SIZE = 320
IGNORED_KEY_SUFFIXES = ("num_batches_tracked",)


# -- weight sources ---------------------------------------------------------------------------------


class _SuppliedWeights:
    """Weights from an ultralytics state dict; every key the graph needs must be present with its shape."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self._weights = weights
        self._used: set[str] = set()

    def tensor(self, key: str, shape: tuple[int, ...], *, optional_default: np.ndarray | None = None) -> np.ndarray:
        if key not in self._weights:
            if optional_default is not None:
                return optional_default
            raise ModelError(
                f"The weights lack {key!r} (expected shape {list(shape)}); pass the full ultralytics "
                "state dict of a YOLOv8 model of this scale and class count."
            )
        value = np.asarray(self._weights[key])
        if value.shape != tuple(shape):
            raise ModelError(
                f"Weight {key!r} has shape {list(value.shape)} but this YOLOv8 spec needs {list(shape)}; "
                "check that the scale and num_classes match the checkpoint."
            )
        self._used.add(key)
        return np.asarray(value, dtype=np.float32)

    def conv_weight(self, key: str, shape: tuple[int, ...], gain: float = 2.0) -> np.ndarray:
        return self.tensor(key, shape)

    def bias(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        return self.tensor(key, shape)

    def batchnorm(self, prefix: str, channels: int, pre_bn: np.ndarray | None) -> list[np.ndarray]:
        return [self.tensor(f"{prefix}.{p}", (channels,)) for p in ("weight", "bias", "running_mean", "running_var")]

    def check_all_used(self) -> None:
        unused = sorted(
            k for k in self._weights if k not in self._used and not k.endswith(IGNORED_KEY_SUFFIXES)
        )
        if unused:
            raise ModelError(
                f"The weights hold {len(unused)} tensor(s) this YOLOv8 architecture has no place for "
                f"(first: {unused[:3]}); the checkpoint is a different model (another head or a "
                "modified yaml)."
            )


@dataclass
class _RandomWeights:
    """Seeded weights: He-normal convs, BN statistics calibrated on a forward pass then perturbed."""

    rng: np.random.Generator

    def conv_weight(self, key: str, shape: tuple[int, ...], gain: float = 2.0) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return self.rng.normal(0.0, np.sqrt(gain / fan_in), size=shape).astype(np.float32)

    def bias(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        # Like the fixtures: N(0, 1) head biases give scores spread over (0, 1) rather than all ~0.
        return self.rng.normal(0.0, 1.0, size=shape).astype(np.float32)

    def tensor(self, key: str, shape: tuple[int, ...], *, optional_default: np.ndarray | None = None) -> np.ndarray:
        assert optional_default is not None, key
        return optional_default

    def batchnorm(self, prefix: str, channels: int, pre_bn: np.ndarray | None) -> list[np.ndarray]:
        assert pre_bn is not None, "random BN statistics need the calibration activations"
        gamma = self.rng.uniform(0.5, 1.5, channels)
        beta = self.rng.normal(0.0, 0.1, channels)
        z = self.rng.normal(0.0, 0.1, channels)
        u = self.rng.uniform(0.5, 2.0, channels)
        mu = pre_bn.mean(axis=(0, 2, 3), dtype=np.float64)
        var = pre_bn.var(axis=(0, 2, 3), dtype=np.float64)
        # A channel that is (nearly) constant on the calibration image would be blown up by 1/sigma.
        var = np.maximum(var, 1e-3 * float(var.mean()) + 1e-12)
        sigma = np.sqrt(var)
        params = [gamma, beta, mu + z * sigma, var * u]
        return [p.astype(np.float32) for p in params]

    def check_all_used(self) -> None:
        pass


# -- numpy reference ops for calibration ---------------------------------------------------------------


def _np_conv(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Conv2d with 'same' padding (k // 2), no bias: what ultralytics Conv does before its BN."""
    k = weight.shape[-1]
    pad = k // 2
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True).astype(np.float32)


def _np_batchnorm(x: np.ndarray, gamma, beta, mean, var) -> np.ndarray:
    scale = gamma / np.sqrt(var + BN_EPSILON)
    return (x * scale.reshape(1, -1, 1, 1) + (beta - mean * scale).reshape(1, -1, 1, 1)).astype(np.float32)


def _np_silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _np_maxpool(x: np.ndarray, k: int) -> np.ndarray:
    pad = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    return sliding_window_view(padded, (k, k), axis=(2, 3)).max(axis=(-2, -1))


def _np_upsample(x: np.ndarray, factor: int) -> np.ndarray:
    return x.repeat(factor, axis=2).repeat(factor, axis=3)


# -- graph emission ----------------------------------------------------------------------------------


@dataclass
class _Value:
    """A graph tensor plus its value on the calibration image (None when not calibrating)."""

    var: gs.Variable
    calib: np.ndarray | None = None


class _Emitter:
    """Appends ultralytics-named nodes and initializers; tracks calibration values alongside."""

    def __init__(self, weights: _SuppliedWeights | _RandomWeights) -> None:
        self.weights = weights
        self.nodes: list[gs.Node] = []

    # generic helpers

    def node(self, op: str, name: str, inputs: list, attrs: dict | None = None, outputs: int = 1) -> list[gs.Variable]:
        outs = [gs.Variable(f"{name}_output_{k}", dtype=np.float32) for k in range(outputs)]
        self.nodes.append(gs.Node(op, name, attrs=attrs or {}, inputs=inputs, outputs=outs))
        return outs

    def constant(self, name: str, value: np.ndarray) -> gs.Variable:
        """A Constant node, as torch.onnx emits shapes, scales and decode constants."""
        out = gs.Variable(f"{name}_output_0", dtype=value.dtype, shape=list(value.shape))
        self.nodes.append(gs.Node("Constant", name, attrs={"value": gs.Constant(f"{name}_value", value)}, outputs=[out]))
        return out

    # ultralytics modules

    def conv_bn_silu(self, x: _Value, key: str, scope: str, c_in: int, c_out: int, k: int, stride: int = 1) -> _Value:
        """ultralytics Conv: Conv2d(bias=False) -> BatchNorm2d(eps=1e-3) -> SiLU (as Sigmoid, Mul)."""
        weight = self.weights.conv_weight(f"{key}.conv.weight", (c_out, c_in, k, k))
        (conv_out,) = self.node(
            "Conv",
            f"{scope}/conv/Conv",
            [x.var, gs.Constant(f"{key}.conv.weight", weight)],
            _conv_attrs(k, stride),
        )
        pre_bn = _np_conv(x.calib, weight, stride) if x.calib is not None else None
        bn_params = self.weights.batchnorm(f"{key}.bn", c_out, pre_bn)
        names = ("weight", "bias", "running_mean", "running_var")
        (bn_out,) = self.node(
            "BatchNormalization",
            f"{scope}/bn/BatchNormalization",
            [conv_out] + [gs.Constant(f"{key}.bn.{n}", p) for n, p in zip(names, bn_params)],
            {"epsilon": BN_EPSILON, "momentum": BN_MOMENTUM, "training_mode": 0},
        )
        (sig,) = self.node("Sigmoid", f"{scope}/act/Sigmoid", [bn_out])
        (mul,) = self.node("Mul", f"{scope}/act/Mul", [bn_out, sig])
        calib = _np_silu(_np_batchnorm(pre_bn, *bn_params)) if pre_bn is not None else None
        return _Value(mul, calib)

    def c2f(self, x: _Value, index: int, c_in: int, c_out: int, n: int, shortcut: bool) -> _Value:
        """C2f (forward_split): cv1 -> Split in two -> n Bottlenecks on the last part -> Concat all -> cv2."""
        key, scope = f"model.{index}", f"/model.{index}"
        hidden = c_out // 2
        y = self.conv_bn_silu(x, f"{key}.cv1", f"{scope}/cv1", c_in, 2 * hidden, 1)
        sizes = self.constant(f"{scope}/Constant", np.array([hidden, hidden], dtype=np.int64))
        parts = self.node("Split", f"{scope}/Split", [y.var, sizes], {"axis": 1}, outputs=2)
        calib_parts = np.split(y.calib, 2, axis=1) if y.calib is not None else [None, None]
        chunks = [_Value(v, c) for v, c in zip(parts, calib_parts)]
        for j in range(n):
            chunks.append(self.bottleneck(chunks[-1], f"{key}.m.{j}", f"{scope}/m.{j}", hidden, shortcut))
        cat = self.concat(chunks, f"{scope}/Concat")
        return self.conv_bn_silu(cat, f"{key}.cv2", f"{scope}/cv2", (2 + n) * hidden, c_out, 1)

    def bottleneck(self, x: _Value, key: str, scope: str, channels: int, shortcut: bool) -> _Value:
        """Bottleneck(e=1.0, k=(3,3)): two 3x3 Convs, plus the input when shortcut (c1 == c2 always here)."""
        h = self.conv_bn_silu(x, f"{key}.cv1", f"{scope}/cv1", channels, channels, 3)
        h = self.conv_bn_silu(h, f"{key}.cv2", f"{scope}/cv2", channels, channels, 3)
        if not shortcut:
            return h
        (out,) = self.node("Add", f"{scope}/Add", [x.var, h.var])
        return _Value(out, x.calib + h.calib if x.calib is not None else None)

    def sppf(self, x: _Value, index: int, c_in: int, c_out: int, k: int) -> _Value:
        """SPPF: cv1 -> three chained MaxPool(k, stride 1) -> Concat of all four -> cv2."""
        key, scope = f"model.{index}", f"/model.{index}"
        hidden = c_in // 2
        y = self.conv_bn_silu(x, f"{key}.cv1", f"{scope}/cv1", c_in, hidden, 1)
        pooled = [y]
        for suffix in ("m", "m_1", "m_2"):  # torch.onnx names the one MaxPool module's 3 calls
            attrs = {"ceil_mode": 0, "dilations": [1, 1], "kernel_shape": [k, k], "pads": [k // 2] * 4, "strides": [1, 1]}
            (out,) = self.node("MaxPool", f"{scope}/{suffix}/MaxPool", [pooled[-1].var], attrs)
            calib = _np_maxpool(pooled[-1].calib, k) if y.calib is not None else None
            pooled.append(_Value(out, calib))
        cat = self.concat(pooled, f"{scope}/Concat")
        return self.conv_bn_silu(cat, f"{key}.cv2", f"{scope}/cv2", 4 * hidden, c_out, 1)

    def upsample(self, x: _Value, index: int, factor: int) -> _Value:
        scope = f"/model.{index}"
        scales = self.constant(f"{scope}/Constant", np.array([1, 1, factor, factor], dtype=np.float32))
        attrs = {"coordinate_transformation_mode": "asymmetric", "cubic_coeff_a": -0.75, "mode": "nearest", "nearest_mode": "floor"}
        (out,) = self.node("Resize", f"{scope}/Resize", [x.var, gs.Variable.empty(), scales], attrs)
        return _Value(out, _np_upsample(x.calib, factor) if x.calib is not None else None)

    def concat(self, values: list[_Value], name: str, axis: int = 1) -> _Value:
        (out,) = self.node("Concat", name, [v.var for v in values], {"axis": axis})
        calib = np.concatenate([v.calib for v in values], axis=axis) if values[0].calib is not None else None
        return _Value(out, calib)

    def detect(self, feats: list[_Value], channels: list[int], spec: YoloV8Spec) -> gs.Variable:
        """Detect (legacy v8 head) in export form: per-level box/class branches, DFL, dist2bbox, sigmoid."""
        key, scope = "model.22", "/model.22"
        widths = detect_widths(spec, channels[0])
        box_channels = 4 * spec.reg_max
        branches = {"cv2": (widths.box, box_channels), "cv3": (widths.cls, spec.num_classes)}
        flat: dict[str, list[gs.Variable]] = {"cv2": [], "cv3": []}
        constant_index = 0
        for branch, (width, c_final) in branches.items():
            shape_consts = []
            for _ in feats:  # torch.onnx hoists the three view() shapes before the first Reshape
                shape_consts.append(
                    self.constant(_indexed(f"{scope}/Constant", constant_index), np.array([1, c_final, -1], dtype=np.int64))
                )
                constant_index += 1
            for level, (x, c_in) in enumerate(zip(feats, channels)):
                bkey, bscope = f"{key}.{branch}.{level}", f"{scope}/{branch}.{level}/{branch}.{level}"
                h = self.conv_bn_silu(x, f"{bkey}.0", f"{bscope}.0", c_in, width, 3)
                h = self.conv_bn_silu(h, f"{bkey}.1", f"{bscope}.1", width, width, 3)
                weight = self.weights.conv_weight(f"{bkey}.2.weight", (c_final, width, 1, 1), gain=1.0)
                bias = self.weights.bias(f"{bkey}.2.bias", (c_final,))
                (logits,) = self.node(
                    "Conv",
                    f"{bscope}.2/Conv",
                    [h.var, gs.Constant(f"{bkey}.2.weight", weight), gs.Constant(f"{bkey}.2.bias", bias)],
                    _conv_attrs(1, 1),
                )
                reshape_index = level + (len(feats) if branch == "cv3" else 0)
                (flat_out,) = self.node(
                    "Reshape", _indexed(f"{scope}/Reshape", reshape_index), [logits, shape_consts[level]], {"allowzero": 0}
                )
                flat[branch].append(flat_out)
        (box_cat,) = self.node("Concat", f"{scope}/Concat", flat["cv2"], {"axis": -1})
        (cls_cat,) = self.node("Concat", f"{scope}/Concat_1", flat["cv3"], {"axis": -1})
        distances = self.dfl(box_cat, spec)
        boxes = self.decode_boxes(distances, spec, constant_index)
        (scores,) = self.node("Sigmoid", f"{scope}/Sigmoid", [cls_cat])
        output = gs.Variable("output0", dtype=np.float32, shape=[1, 4 + spec.num_classes, spec.num_anchors])
        self.nodes.append(gs.Node("Concat", f"{scope}/Concat_3", attrs={"axis": 1}, inputs=[boxes, scores], outputs=[output]))
        return output

    def dfl(self, box_logits: gs.Variable, spec: YoloV8Spec) -> gs.Variable:
        """DFL: softmax over reg_max bins per side, expectation by a fixed 1x1 conv with weights 0..reg_max-1."""
        scope, anchors = "/model.22/dfl", spec.num_anchors
        shape = self.constant(f"{scope}/Constant", np.array([1, 4, spec.reg_max, anchors], dtype=np.int64))
        (bins,) = self.node("Reshape", f"{scope}/Reshape", [box_logits, shape], {"allowzero": 0})
        (bins_t,) = self.node("Transpose", f"{scope}/Transpose", [bins], {"perm": [0, 2, 1, 3]})
        (probs,) = self.node("Softmax", f"{scope}/Softmax", [bins_t], {"axis": 1})
        arange = np.arange(spec.reg_max, dtype=np.float32).reshape(1, spec.reg_max, 1, 1)
        weight = self.weights.tensor("model.22.dfl.conv.weight", arange.shape, optional_default=arange)
        (expect,) = self.node("Conv", f"{scope}/conv/Conv", [probs, gs.Constant("model.22.dfl.conv.weight", weight)], _conv_attrs(1, 1))
        shape_1 = self.constant(f"{scope}/Constant_1", np.array([1, 4, anchors], dtype=np.int64))
        (distances,) = self.node("Reshape", f"{scope}/Reshape_1", [expect, shape_1], {"allowzero": 0})
        return distances

    def decode_boxes(self, distances: gs.Variable, spec: YoloV8Spec, constant_index: int) -> gs.Variable:
        """dist2bbox(xywh=True) * stride with anchor points and strides as constants (ultralytics make_anchors)."""
        scope = "/model.22"

        def const(value: np.ndarray) -> gs.Variable:
            nonlocal constant_index
            out = self.constant(_indexed(f"{scope}/Constant", constant_index), value)
            constant_index += 1
            return out

        axes = const(np.array([1], dtype=np.int64))
        bounds = [const(np.array([v], dtype=np.int64)) for v in (0, 2, 4)]
        (lt,) = self.node("Slice", f"{scope}/Slice", [distances, bounds[0], bounds[1], axes])
        (rb,) = self.node("Slice", f"{scope}/Slice_1", [distances, bounds[1], bounds[2], axes])
        points, strides = make_anchors(spec)
        (x1y1,) = self.node("Sub", f"{scope}/Sub", [const(points), lt])
        (x2y2,) = self.node("Add", f"{scope}/Add_1", [const(points), rb])
        (corner_sum,) = self.node("Add", f"{scope}/Add_2", [x1y1, x2y2])
        (centre,) = self.node("Div", f"{scope}/Div_1", [corner_sum, const(np.array(2.0, dtype=np.float32))])
        (size,) = self.node("Sub", f"{scope}/Sub_1", [x2y2, x1y1])
        (xywh,) = self.node("Concat", f"{scope}/Concat_2", [centre, size], {"axis": 1})
        (pixels,) = self.node("Mul", f"{scope}/Mul_2", [xywh, const(strides)])
        return pixels


def _indexed(name: str, index: int) -> str:
    """torch.onnx's naming of repeated ops in one scope: X, X_1, X_2, ..."""
    return name if index == 0 else f"{name}_{index}"


def _conv_attrs(k: int, stride: int) -> dict:
    pad = k // 2
    return {"dilations": [1, 1], "group": 1, "kernel_shape": [k, k], "pads": [pad] * 4, "strides": [stride, stride]}


def make_anchors(spec: YoloV8Spec, offset: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Anchor points [1, 2, A] (x, y in grid units, row-major per level) and strides [1, A]."""
    height, width = spec.imgsz
    points, strides = [], []
    for stride in STRIDES:
        h, w = height // stride, width // stride
        sy, sx = np.meshgrid(np.arange(h) + offset, np.arange(w) + offset, indexing="ij")
        points.append(np.stack([sx.ravel(), sy.ravel()]))
        strides.append(np.full(h * w, stride))
    return (
        np.concatenate(points, axis=1)[None].astype(np.float32),
        np.concatenate(strides)[None].astype(np.float32),
    )


# -- public API ----------------------------------------------------------------------------------------


def build_yolov8(
    spec: YoloV8Spec,
    weights: Mapping[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    metadata: Mapping[str, str] | None = None,
) -> Model:
    """Build a YOLOv8 detection Model (BN unfused) from `spec` and an ultralytics state dict or a seed.

    `weights` keys are ultralytics state-dict names (`model.0.conv.weight`, `model.0.bn.running_var`,
    `model.22.cv3.2.2.bias`, ...); `*.num_batches_tracked` is ignored, `model.22.dfl.conv.weight` is
    optional (default arange(reg_max)). A missing or wrongly shaped tensor, or one the architecture has
    no place for, raises ModelError. Without weights, seeded random weights with calibrated,
    non-trivial BN statistics are generated.
    """
    if weights is not None:
        source: _SuppliedWeights | _RandomWeights = _SuppliedWeights(weights)
        calib = None
    else:
        rng = np.random.default_rng(seed)
        source = _RandomWeights(rng)
        calib = rng.random((1, 3, CALIBRATION_SIZE, CALIBRATION_SIZE), dtype=np.float32)
    emitter = _Emitter(source)
    height, width = spec.imgsz
    images = gs.Variable("images", dtype=np.float32, shape=[1, 3, height, width])
    outputs: list[_Value] = []
    channels: list[int] = []
    layers = enumerate(YOLOV8_LAYERS)
    if calib is not None:  # the calibration forward pass takes a few seconds for m/l/x
        layers = track(layers, f"Calibrating random yolov8{spec.scale} weights (layer)", total=len(YOLOV8_LAYERS))
    for index, (from_, repeats, module, args) in layers:
        sources = layer_sources(from_, index) if index else []
        x = outputs[sources[0]] if sources else _Value(images, calib)
        c_in = channels[sources[0]] if sources else 3
        if module == "Conv":
            c_out = scaled_channels(spec, args[0])
            y = emitter.conv_bn_silu(x, f"model.{index}", f"/model.{index}", c_in, c_out, args[1], args[2])
        elif module == "C2f":
            c_out = scaled_channels(spec, args[0])
            y = emitter.c2f(x, index, c_in, c_out, scaled_repeats(spec, repeats), shortcut=args[1])
        elif module == "SPPF":
            c_out = scaled_channels(spec, args[0])
            y = emitter.sppf(x, index, c_in, c_out, args[1])
        elif module == "Upsample":
            c_out, y = c_in, emitter.upsample(x, index, args[0])
        elif module == "Concat":
            c_out = sum(channels[i] for i in sources)
            y = emitter.concat([outputs[i] for i in sources], f"/model.{index}/Concat", axis=args[0])
        elif module == "Detect":
            output = emitter.detect([outputs[i] for i in sources], [channels[i] for i in sources], spec)
            continue
        else:  # pragma: no cover - the table is fixed
            raise AssertionError(module)
        outputs.append(y)
        channels.append(c_out)
    source.check_all_used()
    graph = gs.Graph(nodes=emitter.nodes, inputs=[images], outputs=[output], opset=OPSET, name=f"yolov8{spec.scale}")
    origin = "supplied weights" if weights is not None else f"random weights, seed {seed}"
    return Model(graph, metadata=_metadata(spec, origin, metadata), ir_version=IR_VERSION, source=f"yolov8{spec.scale} (built-in, {origin})")


def build_builtin(scale: str = "n", num_classes: int = 80, imgsz: int = 640, seed: int = 0) -> Model:
    """The built-in yolov8{scale} with seeded random weights (what `load_model('yolov8n')` returns)."""
    if scale not in YOLOV8_SCALES:
        raise ModelError(f"Unknown YOLOv8 scale {scale!r}; use one of {', '.join(YOLOV8_SCALES)}.")
    return build_yolov8(YoloV8Spec.from_scale(scale, num_classes=num_classes, imgsz=imgsz), seed=seed)


def _metadata(spec: YoloV8Spec, origin: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    """metadata_props as ultralytics writes them, plus which builder made the model."""
    meta = {
        "description": f"yolograph built-in YOLOv8{spec.scale} model ({origin})",
        "author": "yolograph",
        "stride": str(max(STRIDES)),
        "task": "detect",
        "head": "Detect",
        "batch": "1",
        "imgsz": str(list(spec.imgsz)),
        "names": str(spec.class_names),
        "channels": "3",
        "end2end": "False",
        "yolograph_builder": spec.scale,
    }
    meta.update({str(k): str(v) for k, v in (extra or {}).items()})
    return meta
