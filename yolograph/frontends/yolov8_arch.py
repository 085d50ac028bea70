"""The YOLOv8 detection architecture as data: scales, the layer table, channel and depth rules.

This mirrors ultralytics' `yolov8.yaml` and `parse_model` (release 8.x, legacy v8 Detect head)
without importing ultralytics: the builder walks `YOLOV8_LAYERS` the way `parse_model` does, and
`expected_weight_shapes` lists every state-dict tensor a YOLOv8 checkpoint holds, with its shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yolograph.errors import ModelError

# ultralytics/cfg/models/v8/yolov8.yaml scales: [depth_multiple, width_multiple, max_channels].
YOLOV8_SCALES: dict[str, tuple[float, float, int]] = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
}

STRIDES = (8, 16, 32)
BN_EPSILON = 1e-3  # ultralytics Conv uses BatchNorm2d(eps=0.001, momentum=0.03)
BN_MOMENTUM = 0.97  # as torch.onnx writes it (1 - 0.03)

# yolov8.yaml backbone + head: (from, repeats, module, args). Index = layer number (`model.{i}`).
YOLOV8_LAYERS: tuple[tuple[Any, int, str, tuple], ...] = (
    (-1, 1, "Conv", (64, 3, 2)),  # 0-P1/2
    (-1, 1, "Conv", (128, 3, 2)),  # 1-P2/4
    (-1, 3, "C2f", (128, True)),
    (-1, 1, "Conv", (256, 3, 2)),  # 3-P3/8
    (-1, 6, "C2f", (256, True)),
    (-1, 1, "Conv", (512, 3, 2)),  # 5-P4/16
    (-1, 6, "C2f", (512, True)),
    (-1, 1, "Conv", (1024, 3, 2)),  # 7-P5/32
    (-1, 3, "C2f", (1024, True)),
    (-1, 1, "SPPF", (1024, 5)),  # 9
    (-1, 1, "Upsample", (2,)),
    ((-1, 6), 1, "Concat", (1,)),  # cat backbone P4
    (-1, 3, "C2f", (512, False)),  # 12
    (-1, 1, "Upsample", (2,)),
    ((-1, 4), 1, "Concat", (1,)),  # cat backbone P3
    (-1, 3, "C2f", (256, False)),  # 15 (P3/8-small)
    (-1, 1, "Conv", (256, 3, 2)),
    ((-1, 12), 1, "Concat", (1,)),  # cat head P4
    (-1, 3, "C2f", (512, False)),  # 18 (P4/16-medium)
    (-1, 1, "Conv", (512, 3, 2)),
    ((-1, 9), 1, "Concat", (1,)),  # cat head P5
    (-1, 3, "C2f", (1024, False)),  # 21 (P5/32-large)
    ((15, 18, 21), 1, "Detect", ()),  # Detect(P3, P4, P5)
)

COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


@dataclass(frozen=True)
class YoloV8Spec:
    """Everything that fixes a YOLOv8 detection graph: scale multipliers, classes, input size."""

    scale: str  # 'n','s','m','l','x' or 'custom'
    depth: float  # depth_multiple
    width: float  # width_multiple
    max_channels: int
    num_classes: int = 80
    imgsz: tuple[int, int] = (640, 640)
    reg_max: int = 16
    names: Mapping[int, str] | None = None  # default: COCO names when nc == 80 else 'class{i}'

    def __post_init__(self) -> None:
        if self.scale not in YOLOV8_SCALES and self.scale != "custom":
            raise ModelError(
                f"Unknown YOLOv8 scale {self.scale!r}; use one of n, s, m, l, x, or 'custom' with "
                "explicit depth, width and max_channels."
            )
        if not (self.depth > 0 and self.width > 0 and self.max_channels >= 8):
            raise ModelError(
                f"YOLOv8 multipliers depth={self.depth}, width={self.width}, max_channels="
                f"{self.max_channels} are invalid; depth and width must be > 0 and max_channels >= 8."
            )
        if self.num_classes < 1:
            raise ModelError(f"num_classes={self.num_classes} is invalid; a detector needs at least 1 class.")
        if self.reg_max < 1:
            raise ModelError(f"reg_max={self.reg_max} is invalid; use the YOLOv8 default 16.")
        imgsz = tuple(int(v) for v in self.imgsz)
        if len(imgsz) != 2 or any(v <= 0 or v % max(STRIDES) for v in imgsz):
            raise ModelError(
                f"Image size {self.imgsz} is invalid; YOLOv8 needs height and width that are positive "
                f"multiples of {max(STRIDES)} (e.g. 640 or (384, 640))."
            )
        object.__setattr__(self, "imgsz", imgsz)
        if self.names is not None and set(self.names) != set(range(self.num_classes)):
            raise ModelError(
                f"names has keys {sorted(self.names)[:5]}...; it must map exactly 0..{self.num_classes - 1} "
                "to class names."
            )

    @classmethod
    def from_scale(cls, scale: str, num_classes: int = 80, imgsz: int | tuple[int, int] = 640) -> YoloV8Spec:
        """The spec of a stock yolov8{n,s,m,l,x}.yaml model with `num_classes` classes."""
        if scale not in YOLOV8_SCALES:
            raise ModelError(f"Unknown YOLOv8 scale {scale!r}; use one of {', '.join(YOLOV8_SCALES)}.")
        depth, width, max_channels = YOLOV8_SCALES[scale]
        size = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
        return cls(scale, depth, width, max_channels, num_classes=num_classes, imgsz=size)  # type: ignore[arg-type]

    @property
    def class_names(self) -> dict[int, str]:
        if self.names is not None:
            return {int(k): str(v) for k, v in sorted(self.names.items())}
        if self.num_classes == len(COCO_NAMES):
            return dict(enumerate(COCO_NAMES))
        return {i: f"class{i}" for i in range(self.num_classes)}

    @property
    def num_anchors(self) -> int:
        height, width = self.imgsz
        return sum((height // s) * (width // s) for s in STRIDES)


def make_divisible(value: float, divisor: int = 8) -> int:
    """ultralytics.utils.ops.make_divisible: round up to a multiple of `divisor`."""
    return int(math.ceil(value / divisor) * divisor)


def scaled_channels(spec: YoloV8Spec, channels: int) -> int:
    """Output channels of a layer as parse_model scales them."""
    return make_divisible(min(channels, spec.max_channels) * spec.width, 8)


def scaled_repeats(spec: YoloV8Spec, repeats: int) -> int:
    """Bottleneck count of a C2f as parse_model scales it."""
    return max(round(repeats * spec.depth), 1) if repeats > 1 else repeats


@dataclass(frozen=True)
class DetectWidths:
    """Channel widths of the decoupled Detect head (ultralytics Detect.__init__)."""

    box: int  # c2 = max(16, ch[0] // 4, 4 * reg_max)
    cls: int  # c3 = max(ch[0], min(nc, 100))


def detect_widths(spec: YoloV8Spec, p3_channels: int) -> DetectWidths:
    return DetectWidths(
        box=max(16, p3_channels // 4, 4 * spec.reg_max),
        cls=max(p3_channels, min(spec.num_classes, 100)),
    )


def layer_channels(spec: YoloV8Spec) -> list[int]:
    """Output channels of layers 0..21 (the Detect layer has no single width)."""
    out: list[int] = []
    for source, _, module, args in YOLOV8_LAYERS:
        if module in ("Conv", "C2f", "SPPF"):
            out.append(scaled_channels(spec, args[0]))
        elif module == "Upsample":
            out.append(out[-1])
        elif module == "Concat":
            out.append(sum(out[i] for i in _sources(source, len(out))))
    return out


def _sources(source: Any, index: int) -> list[int]:
    items = source if isinstance(source, tuple) else (source,)
    return [index + s if s < 0 else s for s in items]


def layer_sources(source: Any, index: int) -> list[int]:
    """Absolute indices of the layers a layer reads ('from' column, -1 = the previous layer)."""
    return _sources(source, index)


def expected_weight_shapes(spec: YoloV8Spec) -> dict[str, tuple[int, ...]]:
    """Every ultralytics state-dict tensor of this architecture (minus num_batches_tracked), with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(key: str, c_in: int, c_out: int, k: int) -> None:
        shapes[f"{key}.conv.weight"] = (c_out, c_in, k, k)
        for param in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{key}.bn.{param}"] = (c_out,)

    channels = layer_channels(spec)
    for index, (source, repeats, module, args) in enumerate(YOLOV8_LAYERS):
        key = f"model.{index}"
        inputs = [channels[i] for i in layer_sources(source, index)] if index else [3]
        c_in = inputs[0]
        if module == "Conv":
            conv(key, c_in, channels[index], args[1])
        elif module == "C2f":
            c_out, hidden = channels[index], channels[index] // 2
            n = scaled_repeats(spec, repeats)
            conv(f"{key}.cv1", c_in, 2 * hidden, 1)
            for j in range(n):
                conv(f"{key}.m.{j}.cv1", hidden, hidden, 3)
                conv(f"{key}.m.{j}.cv2", hidden, hidden, 3)
            conv(f"{key}.cv2", (2 + n) * hidden, c_out, 1)
        elif module == "SPPF":
            hidden = c_in // 2
            conv(f"{key}.cv1", c_in, hidden, 1)
            conv(f"{key}.cv2", 4 * hidden, channels[index], 1)
        elif module == "Detect":
            widths = detect_widths(spec, inputs[0])
            for level, c_level in enumerate(inputs):
                for branch, width, c_final in (("cv2", widths.box, 4 * spec.reg_max), ("cv3", widths.cls, spec.num_classes)):
                    conv(f"{key}.{branch}.{level}.0", c_level, width, 3)
                    conv(f"{key}.{branch}.{level}.1", width, width, 3)
                    shapes[f"{key}.{branch}.{level}.2.weight"] = (c_final, width, 1, 1)
                    shapes[f"{key}.{branch}.{level}.2.bias"] = (c_final,)
            shapes[f"{key}.dfl.conv.weight"] = (1, spec.reg_max, 1, 1)
    return shapes


def parameter_count(spec: YoloV8Spec, fused: bool = False) -> int:
    """Parameters as ultralytics `model.info()` counts them (BN running stats are buffers, not counted).

    Unfused: conv weights + BN weight/bias + head biases + DFL weight (the yolov8.yaml summary numbers).
    Fused: each BN becomes a conv bias of its channel count (the `summary (fused)` numbers).
    """
    total = 0
    for name, shape in expected_weight_shapes(spec).items():
        if name.endswith(("running_mean", "running_var")) or (fused and name.endswith(".bn.weight")):
            continue
        total += math.prod(shape)
    return total
