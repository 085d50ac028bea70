"""Decode any YOLO task's raw outputs into `Predictions` on the original image: one implementation for
`eval` and `predict`.

Detect goes through `postprocess` (the detect mAP path, unchanged). Segment, pose and obb select
anchors with the same NMS (`select_anchors`; obb with Ultralytics' rotated NMS) and then gather their
extra rows: mask coefficients (x prototypes -> masks), keypoints, the angle. Classify keeps the top-5
class probabilities. Classification input is Ultralytics' ``classify_transforms`` (shortest side to
the input size, centre crop); every other task is letterboxed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from yolograph.evaluation import rotated
from yolograph.evaluation.masks import masks_from_prototypes
from yolograph.evaluation.postprocess import (
    MAX_NMS,
    MAX_WH,
    _candidates,
    postprocess,
    scale_boxes_to_original,
    select_anchors,
)
from yolograph.evaluation.preprocess import (
    LetterboxGeometry,
    letterbox,
    normalize_imgsz,
    read_image,
    to_input_tensor,
)
from yolograph.evaluation.tasks import TaskLayout

TOP_K = 5


@dataclass(frozen=True)
class Predictions:
    """What a model found in one image, in original-image pixels, highest score first.

    ``boxes`` float32 ``[N, 4]`` xyxy (for obb: around the rotated box), ``scores`` ``[N]``, ``classes``
    int64 ``[N]``; where the task has them: ``masks`` bool ``[N, H, W]``, ``keypoints`` float32
    ``[N, K, 3]`` (x, y, visibility; visibility 1 where the model has only x, y), ``rotated`` float32
    ``[N, 5]`` (cx, cy, w, h, angle in radians), and for classify ``top5`` / ``top5_scores``.
    """

    task: str
    image_shape: tuple[int, int]  # (height, width) of the original image
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    rotated: np.ndarray | None = None
    top5: np.ndarray | None = None
    top5_scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, index: np.ndarray) -> Predictions:
        """The detections at `index` (a bool mask or integer indices); classify results stay whole."""
        if self.task == "classify":
            return self
        pick = (lambda a: None if a is None else a[index])
        return replace(self, boxes=self.boxes[index], scores=self.scores[index], classes=self.classes[index],
                       masks=pick(self.masks), keypoints=pick(self.keypoints), rotated=pick(self.rotated))

    def confident(self, conf: float) -> Predictions:
        """Only the detections scoring at least `conf` (the pseudo-labels a reference model gives)."""
        return self.select(self.scores >= conf)

    def to_json(self, layout: TaskLayout) -> dict[str, Any]:
        """Plain lists: per detection its class, name, score, box and the task's extras (no masks' pixels:
        a mask is given by its pixel area and its bounding box)."""
        if self.task == "classify":
            top = [{"class": int(c), "name": layout.name(c), "score": round(float(s), 5)}
                   for c, s in zip(self.top5, self.top5_scores)]
            return {"task": self.task, "image_shape": list(self.image_shape), "top5": top}
        items = []
        for i in range(len(self)):
            item: dict[str, Any] = {"class": int(self.classes[i]), "name": layout.name(self.classes[i]),
                                    "score": round(float(self.scores[i]), 5),
                                    "box": [round(float(v), 2) for v in self.boxes[i]]}
            if self.masks is not None:
                item["mask_area"] = int(self.masks[i].sum())
            if self.keypoints is not None:
                item["keypoints"] = [[round(float(v), 2) for v in point] for point in self.keypoints[i]]
            if self.rotated is not None:
                item["rotated_box"] = [round(float(v), 4) for v in self.rotated[i]]
            items.append(item)
        return {"task": self.task, "image_shape": list(self.image_shape), "detections": items}


def classify_preprocess(image_bgr: np.ndarray, imgsz: int | tuple[int, int]) -> tuple[np.ndarray, LetterboxGeometry]:
    """Ultralytics ``classify_transforms``: scale the shortest side to the input size, centre crop.

    The geometry's pads are negative (the crop offset), so ``input = original * ratio + pad`` holds.
    """
    height, width = normalize_imgsz(imgsz)
    h0, w0 = image_bgr.shape[:2]
    ratio = max(height / h0, width / w0)
    new_w, new_h = max(width, round(w0 * ratio)), max(height, round(h0 * ratio))
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, left = round((new_h - height) / 2.0), round((new_w - width) / 2.0)
    cropped = resized[top : top + height, left : left + width]
    return to_input_tensor(cropped), LetterboxGeometry(ratio, -left, -top, (h0, w0), (height, width))


def prepare_image(image: np.ndarray | str | os.PathLike[str], task: str,
                  imgsz: int | tuple[int, int]) -> tuple[np.ndarray, LetterboxGeometry]:
    """A path or an HxWx3 BGR image -> the task's ``[1, 3, H, W]`` float32 input tensor and its geometry."""
    image_bgr = read_image(image) if isinstance(image, (str, os.PathLike)) else image
    if task == "classify":
        return classify_preprocess(image_bgr, imgsz)
    padded, geometry = letterbox(image_bgr, imgsz)
    return to_input_tensor(padded), geometry


def decode(outputs: Sequence[np.ndarray], geometry: LetterboxGeometry, layout: TaskLayout, conf: float = 0.25,
           iou: float = 0.7, max_det: int = 300, mask_scale: float = 1.0) -> Predictions:
    """The raw outputs of one image -> its Predictions (see the module doc); `mask_scale` sizes masks."""
    if layout.task == "classify":
        return _decode_classify(outputs[0], geometry)
    if layout.task == "detect":
        found = postprocess(outputs[0], geometry, conf=conf, iou=iou, max_det=max_det)
        return Predictions("detect", geometry.original_shape, found.boxes, found.scores, found.classes)
    prediction = np.asarray(outputs[0])[0].astype(np.float32, copy=False)
    if layout.task == "obb":
        return _decode_obb(prediction, geometry, layout, conf, iou, max_det)
    anchors, boxes, scores, classes = select_anchors(prediction, layout.num_classes, conf, iou, max_det)
    boxes = scale_boxes_to_original(boxes.reshape(-1, 4), geometry)
    extra = prediction[4 + layout.num_classes :, anchors].T  # [N, extra rows]
    found = Predictions(layout.task, geometry.original_shape, boxes, scores, classes)
    if layout.task == "segment":
        prototypes = np.asarray(outputs[1])[0]
        return replace(found, masks=masks_from_prototypes(extra, prototypes, boxes, geometry, mask_scale))
    return replace(found, keypoints=_keypoints_to_original(extra, layout.kpt_shape, geometry))


def _keypoints_to_original(rows: np.ndarray, kpt_shape: tuple[int, int], geometry: LetterboxGeometry) -> np.ndarray:
    count, dims = kpt_shape
    points = rows.reshape(-1, count, dims).astype(np.float32)
    if dims == 2:
        points = np.concatenate([points, np.ones((*points.shape[:2], 1), np.float32)], axis=2)
    height, width = geometry.original_shape
    points[..., 0] = np.clip((points[..., 0] - geometry.pad_left) / geometry.ratio, 0, width)
    points[..., 1] = np.clip((points[..., 1] - geometry.pad_top) / geometry.ratio, 0, height)
    return points


def _decode_obb(prediction: np.ndarray, geometry: LetterboxGeometry, layout: TaskLayout, conf: float,
                iou: float, max_det: int) -> Predictions:
    anchors, _, scores, classes = _candidates(prediction, layout.num_classes, conf)
    order = np.argsort(-scores, kind="stable")[:MAX_NMS]
    anchors, scores, classes = anchors[order], scores[order], classes[order]
    rboxes = np.concatenate([prediction[:4, anchors], prediction[-1:, anchors]], axis=0).T.astype(np.float32)
    offset = rboxes.copy()
    offset[:, :2] += (classes.astype(np.float32) * np.float32(MAX_WH))[:, None]  # class-aware, as Ultralytics
    keep = rotated.nms_rotated(offset, scores, iou, max_keep=max_det)
    rboxes = rotated.regularize(rboxes[keep].reshape(-1, 5))
    rboxes[:, 0] = (rboxes[:, 0] - geometry.pad_left) / geometry.ratio
    rboxes[:, 1] = (rboxes[:, 1] - geometry.pad_top) / geometry.ratio
    rboxes[:, 2:4] /= geometry.ratio
    height, width = geometry.original_shape
    boxes = rotated.enclosing_xyxy(rboxes)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return Predictions("obb", geometry.original_shape, boxes, scores[keep], classes[keep], rotated=rboxes)


def _decode_classify(output: np.ndarray, geometry: LetterboxGeometry) -> Predictions:
    probabilities = np.asarray(output, dtype=np.float32).reshape(-1)
    if probabilities.min() < 0 or abs(float(probabilities.sum()) - 1.0) > 1e-2:  # logits: softmax them
        shifted = np.exp(probabilities - probabilities.max())
        probabilities = shifted / shifted.sum()
    top = np.argsort(-probabilities, kind="stable")[:TOP_K]
    empty = np.zeros(0, np.float32)
    return Predictions("classify", geometry.original_shape, np.zeros((0, 4), np.float32), empty,
                       np.zeros(0, np.int64), top5=top.astype(np.int64), top5_scores=probabilities[top])
