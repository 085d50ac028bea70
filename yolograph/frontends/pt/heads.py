"""Lowering of ultralytics heads in their ONNX-export form: Detect, Segment, Pose, OBB, Classify.

The graphs follow `ultralytics/nn/modules/head.py` (release 8.4) with `export=True`:

* Detect: per level a box branch (`cv2`) and a class branch (`cv3`; YOLOv8's Conv-Conv-Conv2d or
  YOLO11/26's depthwise DWConv-Conv pairs, whatever the record holds), flattened and concatenated
  over levels; DFL (softmax over `reg_max` bins, expectation by the 1x1 DFL conv) unless
  reg_max == 1 (YOLO26), then dist2bbox (xywh) times the stride; class scores through a sigmoid.
  Output `output0` [1, 4 + nc, anchors].
* Segment: Detect plus mask coefficients (`cv4`) appended to `output0`, and the Proto branch on the
  P3 map as `output1` [1, nm, 4H, 4W].
* Pose: Detect plus keypoints decoded as (2 * xy + anchor - 0.5) * stride and sigmoid visibility.
* OBB: Detect whose boxes are decoded with the angle (sigmoid - 1/4) * pi (dist2rbox), angle
  appended as the last row.
* Classify: Conv -> global average pool -> Linear -> softmax, `output0` [1, nc].

The one-to-many branches (`cv2`, `cv3`, `cv4`) are lowered: that is what ultralytics exports when
the export is not end-to-end (metadata `end2end: False`, as the YOLO26 fixture export is). The
one-to-one branches of an end-to-end head (`one2one_*`) and its top-k postprocess are not lowered.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from yolograph.errors import ModelError
from yolograph.frontends.pt.blocks import lower_block
from yolograph.frontends.pt.checkpoint import ModuleRecord
from yolograph.frontends.pt.emitter import (
    Emitter,
    Value,
    binary,
    child,
    concat,
    conv2d,
    ordered_children,
    reshape,
    slice_axis,
    split,
    tensor,
)

HeadHandler = Callable[[Emitter, ModuleRecord, list[Value], str, str, tuple[int, int]], list[Value]]


def _int(record: ModuleRecord, name: str, key: str) -> int:
    value = record.get(name)
    if not isinstance(value, int) or value < 1:
        raise ModelError(f"The checkpoint's {record.type_name} at {key} has {name}={value!r}; it is malformed.")
    return value


def _level_branches(record: ModuleRecord, name: str, levels: int, key: str) -> list[tuple[str, ModuleRecord]]:
    branches = ordered_children(child(record, name, key))
    if len(branches) != levels:
        raise ModelError(
            f"The checkpoint's {record.type_name} at {key} has {len(branches)} {name} branches for {levels} levels."
        )
    return branches


def flat_branch(
    em: Emitter, record: ModuleRecord, name: str, feats: list[Value], rows: int, key: str, scope: str
) -> Value:
    """Branch `name` run on every level, each output flattened to [1, rows, H*W], concatenated over levels."""
    flat = []
    for (index, branch), x in zip(_level_branches(record, name, len(feats), key), feats):
        y = lower_block(em, branch, x, f"{key}.{name}.{index}", f"{scope}/{name}.{index}")
        if y.shape[1] != rows:
            raise ModelError(
                f"The checkpoint's {record.type_name} at {key}: {name}.{index} gives {y.shape[1]} channels, "
                f"not {rows}; it is malformed."
            )
        flat.append(reshape(em, y, [y.shape[0], rows, y.shape[2] * y.shape[3]], f"{scope}/Reshape"))
    return concat(em, flat, f"{scope}/Concat", axis=2)


def make_anchors(feats: list[Value], imgsz: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres [2, A] in grid units (x, y; row-major per level) and strides [1, A], from the map sizes."""
    points, strides = [], []
    for x in feats:
        h, w = x.shape[2], x.shape[3]
        stride = imgsz[0] / h
        if stride != imgsz[1] / w:
            raise ModelError(f"A head level of {h}x{w} does not divide the {imgsz} input evenly.")
        sy, sx = np.meshgrid(np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5, indexing="ij")
        points.append(np.stack([sx.ravel(), sy.ravel()]))
        strides.append(np.full(h * w, stride, dtype=np.float32))
    return np.concatenate(points, axis=1).astype(np.float32), np.concatenate(strides)[None].astype(np.float32)


def dfl(em: Emitter, record: ModuleRecord, boxes: Value, reg_max: int, key: str, scope: str) -> Value:
    """DFL: [1, 4*reg_max, A] -> softmax over the bins of each side -> expectation by the 1x1 DFL conv -> [1, 4, A]."""
    n, _, anchors = boxes.shape
    module = record.children.get("dfl")
    if reg_max == 1:
        if isinstance(module, ModuleRecord) and module.type_name != "Identity":
            raise ModelError(f"The checkpoint's head at {key} has reg_max 1 but a {module.type_name} DFL.")
        return boxes
    if not isinstance(module, ModuleRecord) or module.type_name != "DFL":
        raise ModelError(f"The checkpoint's head at {key} has reg_max {reg_max} but no DFL module; it is malformed.")
    dscope = f"{scope}/dfl"
    bins = reshape(em, boxes, [n, 4, reg_max, anchors], f"{dscope}/Reshape")
    bins = em.op("Transpose", f"{dscope}/Transpose", [bins], (n, reg_max, 4, anchors), {"perm": [0, 2, 1, 3]})
    probs = em.op("Softmax", f"{dscope}/Softmax", [bins], bins.shape, {"axis": 1})
    conv = child(module, "conv", f"{key}.dfl")
    tensor(conv, "weight", f"{key}.dfl.conv", (1, reg_max, 1, 1))  # shape check before emission
    expect = conv2d(em, probs, conv, f"{key}.dfl.conv", f"{dscope}/conv")
    return reshape(em, expect, [n, 4, anchors], f"{dscope}/Reshape")


def dist2bbox(em: Emitter, dist: Value, anchors: np.ndarray, strides: np.ndarray, scope: str) -> Value:
    """(left, top, right, bottom) distances -> (cx, cy, w, h) in pixels."""
    lt = slice_axis(em, dist, 0, 2, 1, f"{scope}/Slice")
    rb = slice_axis(em, dist, 2, 4, 1, f"{scope}/Slice")
    points = em.constant(f"{scope}/anchors", anchors[None])
    x1y1 = binary(em, "Sub", points, lt, f"{scope}/Sub")
    x2y2 = binary(em, "Add", points, rb, f"{scope}/Add")
    centre = binary(em, "Div", binary(em, "Add", x1y1, x2y2, f"{scope}/Add"), em.scalar(scope, 2.0), f"{scope}/Div")
    size = binary(em, "Sub", x2y2, x1y1, f"{scope}/Sub")
    xywh = concat(em, [centre, size], f"{scope}/Concat", axis=1)
    return binary(em, "Mul", xywh, em.constant(f"{scope}/strides", strides), f"{scope}/Mul")


def dist2rbox(em: Emitter, dist: Value, angle: Value, anchors: np.ndarray, strides: np.ndarray, scope: str) -> Value:
    """Rotated boxes: the centre offset (rb - lt) / 2 rotated by the angle, size lt + rb; times the stride."""
    lt, rb = split(em, dist, [2, 2], 1, f"{scope}/Split")
    cos = em.op("Cos", f"{scope}/Cos", [angle], angle.shape)
    sin = em.op("Sin", f"{scope}/Sin", [angle], angle.shape)
    half = binary(em, "Div", binary(em, "Sub", rb, lt, f"{scope}/Sub"), em.scalar(scope, 2.0), f"{scope}/Div")
    xf, yf = split(em, half, [1, 1], 1, f"{scope}/Split")
    x = binary(
        em,
        "Sub",
        binary(em, "Mul", xf, cos, f"{scope}/Mul"),
        binary(em, "Mul", yf, sin, f"{scope}/Mul"),
        f"{scope}/Sub",
    )
    y = binary(
        em,
        "Add",
        binary(em, "Mul", xf, sin, f"{scope}/Mul"),
        binary(em, "Mul", yf, cos, f"{scope}/Mul"),
        f"{scope}/Add",
    )
    xy = binary(
        em,
        "Add",
        concat(em, [x, y], f"{scope}/Concat", axis=1),
        em.constant(f"{scope}/anchors", anchors[None]),
        f"{scope}/Add",
    )
    box = concat(em, [xy, binary(em, "Add", lt, rb, f"{scope}/Add")], f"{scope}/Concat", axis=1)
    return binary(em, "Mul", box, em.constant(f"{scope}/strides", strides), f"{scope}/Mul")


# -- heads --------------------------------------------------------------------------------------------


def _detect_parts(
    em: Emitter, record: ModuleRecord, feats: list[Value], key: str, scope: str, imgsz: tuple[int, int]
) -> tuple[Value, Value, np.ndarray, np.ndarray]:
    """The box distances [1, 4, A] (after DFL), raw class logits [1, nc, A], anchors and strides."""
    levels = _int(record, "nl", key)
    if levels != len(feats):
        raise ModelError(f"The checkpoint's {record.type_name} at {key} has nl={levels} but reads {len(feats)} maps.")
    nc, reg_max = _int(record, "nc", key), _int(record, "reg_max", key)
    boxes = flat_branch(em, record, "cv2", feats, 4 * reg_max, key, scope)
    logits = flat_branch(em, record, "cv3", feats, nc, key, scope)
    anchors, strides = make_anchors(feats, imgsz)
    return dfl(em, record, boxes, reg_max, key, scope), logits, anchors, strides


def _named_output(value: Value, name: str) -> Value:
    value.var.name = name
    return value


def detect(
    em: Emitter, record: ModuleRecord, feats: list[Value], key: str, scope: str, imgsz: tuple[int, int]
) -> list[Value]:
    dist, logits, anchors, strides = _detect_parts(em, record, feats, key, scope, imgsz)
    boxes = dist2bbox(em, dist, anchors, strides, scope)
    scores = em.op("Sigmoid", f"{scope}/Sigmoid", [logits], logits.shape)
    return [_named_output(concat(em, [boxes, scores], f"{scope}/Concat", axis=1), "output0")]


def segment(
    em: Emitter, record: ModuleRecord, feats: list[Value], key: str, scope: str, imgsz: tuple[int, int]
) -> list[Value]:
    dist, logits, anchors, strides = _detect_parts(em, record, feats, key, scope, imgsz)
    boxes = dist2bbox(em, dist, anchors, strides, scope)
    scores = em.op("Sigmoid", f"{scope}/Sigmoid", [logits], logits.shape)
    coefficients = flat_branch(em, record, "cv4", feats, _int(record, "nm", key), key, scope)
    detections = concat(em, [boxes, scores, coefficients], f"{scope}/Concat", axis=1)
    proto = child(record, "proto", key)
    if proto.type_name != "Proto":
        raise ModelError(f"unsupported: {proto.type_name} as the mask prototype branch at {key}; Proto only.")
    protos = feats[0]
    for name in ("cv1", "upsample", "cv2", "cv3"):
        part = child(proto, name, f"{key}.proto")  # Conv, ConvTranspose2d x2 upsampling, Conv, Conv
        protos = lower_block(em, part, protos, f"{key}.proto.{name}", f"{scope}/proto/{name}")
    return [_named_output(detections, "output0"), _named_output(protos, "output1")]


def pose(
    em: Emitter, record: ModuleRecord, feats: list[Value], key: str, scope: str, imgsz: tuple[int, int]
) -> list[Value]:
    dist, logits, anchors, strides = _detect_parts(em, record, feats, key, scope, imgsz)
    boxes = dist2bbox(em, dist, anchors, strides, scope)
    scores = em.op("Sigmoid", f"{scope}/Sigmoid", [logits], logits.shape)
    kpt_shape = record.get("kpt_shape")
    if not (isinstance(kpt_shape, (list, tuple)) and len(kpt_shape) == 2 and kpt_shape[1] in (2, 3)):
        raise ModelError(f"The checkpoint's Pose head at {key} has kpt_shape {kpt_shape!r}; it needs [K, 2 or 3].")
    count, ndim = int(kpt_shape[0]), int(kpt_shape[1])
    raw = flat_branch(em, record, "cv4", feats, count * ndim, key, scope)
    n, _, total = raw.shape
    grid = reshape(em, raw, [n, count, ndim, total], f"{scope}/Reshape")
    xy = binary(em, "Mul", slice_axis(em, grid, 0, 2, 2, f"{scope}/Slice"), em.scalar(scope, 2.0), f"{scope}/Mul")
    xy = binary(em, "Add", xy, em.constant(f"{scope}/kpt_anchors", anchors - 0.5), f"{scope}/Add")
    parts = [binary(em, "Mul", xy, em.constant(f"{scope}/strides", strides), f"{scope}/Mul")]
    if ndim == 3:
        visibility = slice_axis(em, grid, 2, 3, 2, f"{scope}/Slice")
        parts.append(em.op("Sigmoid", f"{scope}/Sigmoid", [visibility], visibility.shape))
    keypoints = reshape(
        em,
        concat(em, parts, f"{scope}/Concat", axis=2) if len(parts) > 1 else parts[0],
        [n, count * ndim, total],
        f"{scope}/Reshape",
    )
    return [_named_output(concat(em, [boxes, scores, keypoints], f"{scope}/Concat", axis=1), "output0")]


def obb(
    em: Emitter, record: ModuleRecord, feats: list[Value], key: str, scope: str, imgsz: tuple[int, int]
) -> list[Value]:
    dist, logits, anchors, strides = _detect_parts(em, record, feats, key, scope, imgsz)
    raw = flat_branch(em, record, "cv4", feats, _int(record, "ne", key), key, scope)
    angle = em.op("Sigmoid", f"{scope}/Sigmoid", [raw], raw.shape)
    angle = binary(
        em,
        "Mul",
        binary(em, "Sub", angle, em.scalar(scope, 0.25), f"{scope}/Sub"),
        em.scalar(scope, math.pi),
        f"{scope}/Mul",
    )
    if angle.shape[1] != 1:
        raise ModelError(f"unsupported: an OBB head with {angle.shape[1]} extra parameters at {key}; one angle only.")
    boxes = dist2rbox(em, dist, angle, anchors, strides, scope)
    scores = em.op("Sigmoid", f"{scope}/Sigmoid", [logits], logits.shape)
    return [_named_output(concat(em, [boxes, scores, angle], f"{scope}/Concat", axis=1), "output0")]


def classify(
    em: Emitter, record: ModuleRecord, feats: list[Value], key: str, scope: str, imgsz: tuple[int, int]
) -> list[Value]:
    x = feats[0] if len(feats) == 1 else concat(em, feats, f"{scope}/Concat")
    x = lower_block(em, child(record, "conv", key), x, f"{key}.conv", f"{scope}/conv")
    pool = child(record, "pool", key)
    if pool.type_name != "AdaptiveAvgPool2d" or pool.get("output_size") not in (1, (1, 1), [1, 1]):
        raise ModelError(f"unsupported: {pool.type_name} {pool.get('output_size')!r} as the Classify pool at {key}.")
    n, c = x.shape[:2]
    pooled = em.op("GlobalAveragePool", f"{scope}/pool/GlobalAveragePool", [x], (n, c, 1, 1))
    flat = em.op("Flatten", f"{scope}/Flatten", [pooled], (n, c), {"axis": 1})
    linear = child(record, "linear", key)
    weight = tensor(linear, "weight", f"{key}.linear")
    if weight.ndim != 2 or weight.shape[1] != c:
        raise ModelError(f"The checkpoint's Classify linear at {key} has weight {list(weight.shape)} for {c} inputs.")
    inputs: list = [flat, em.constant(f"{key}.linear.weight", weight)]
    if linear.parameters.get("bias") is not None:
        inputs.append(em.constant(f"{key}.linear.bias", tensor(linear, "bias", f"{key}.linear", (weight.shape[0],))))
    attrs = {"alpha": 1.0, "beta": 1.0, "transB": 1}
    logits = em.op("Gemm", f"{scope}/linear/Gemm", inputs, (n, weight.shape[0]), attrs)
    probs = em.op("Softmax", f"{scope}/Softmax", [logits], logits.shape, {"axis": 1})
    return [_named_output(probs, "output0")]


HEADS: dict[str, tuple[str, HeadHandler]] = {
    "Detect": ("detect", detect),
    "Segment": ("segment", segment),
    "Pose": ("pose", pose),
    "OBB": ("obb", obb),
    "Classify": ("classify", classify),
}

# Modules that only occur inside a head (lowered by the head, not as blocks).
HEAD_PARTS = frozenset({"DFL", "Proto", "AdaptiveAvgPool2d", "Dropout", "Linear"})
