"""Decode raw YOLOv8 detect outputs into boxes on the original image, in numpy.

The raw output is ``[1, 4 + nc, A]``: per anchor ``cx, cy, w, h`` in input pixels, then ``nc`` class
scores (already sigmoid). Steps follow Ultralytics ``ops.non_max_suppression`` + ``scale_boxes``:

1. keep anchors whose best class score is ``> conf``;
2. one label per box, its best class (Ultralytics *val* uses ``multi_label=True``, which may emit one
   box per class above ``conf``; we use the single best class, as Ultralytics *predict* does, so every
   anchor gives at most one detection; this scores slightly lower mAP than multi-label);
3. class-aware NMS at IoU ``iou`` by offsetting boxes by ``class * 7680`` in float32 (the Ultralytics
   ``max_wh`` trick, kept so IoUs round the same way), keeping at most ``max_det`` boxes;
4. subtract the letterbox pad, divide by its ratio, clip to the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yolograph.errors import ModelError
from yolograph.evaluation.preprocess import LetterboxGeometry

MAX_WH = 7680  # Ultralytics: larger than any box side, so boxes of different classes never overlap
MAX_NMS = 30000  # Ultralytics: at most this many candidates enter NMS


@dataclass(frozen=True)
class Detections:
    """Detections of one image: ``boxes`` float32 ``[N, 4]`` xyxy pixels, ``scores`` ``[N]``, ``classes`` int64 ``[N]``.

    Sorted by score, highest first.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def check_raw_output(output: np.ndarray) -> np.ndarray:
    """Return `output` as a ``[4 + nc, A]`` float32 array, or raise ModelError if it is not ``[1, 4 + nc, A]``."""
    array = np.asarray(output)
    if array.ndim != 3 or array.shape[0] != 1 or array.shape[1] < 5:
        raise ModelError(
            f"The model output has shape {list(array.shape)}, not [1, 4 + classes, anchors]; "
            "pass the raw YOLOv8 detect output (no NMS inside the model)."
        )
    return array[0].astype(np.float32, copy=False)


def decode_candidates(output: np.ndarray, conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The xyxy boxes (input pixels), best-class scores and classes of the anchors scoring ``> conf``."""
    prediction = check_raw_output(output)
    _, boxes, scores, classes = _candidates(prediction, prediction.shape[0] - 4, conf)
    return boxes, scores, classes


def _candidates(prediction: np.ndarray, num_classes: int, conf: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Anchor indices, xyxy boxes, best-class scores and classes of the anchors scoring ``> conf``.

    `prediction` is ``[4 + num_classes + extra, A]``; rows after the class scores are ignored here.
    """
    class_scores = prediction[4 : 4 + num_classes]
    classes = class_scores.argmax(axis=0)
    scores = class_scores[classes, np.arange(class_scores.shape[1])]
    keep = scores > conf
    cx, cy, w, h = prediction[:4, keep]
    half_w, half_h = w / 2, h / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    return np.flatnonzero(keep), boxes, scores[keep], classes[keep].astype(np.int64)


def select_anchors(prediction: np.ndarray, num_classes: int, conf: float = 0.001, iou: float = 0.7,
                   max_det: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-3 of the module doc on a ``[4 + num_classes + extra, A]`` prediction.

    Returns the kept anchors' indices (so a task's extra rows can be gathered), their xyxy boxes in
    input pixels, scores and classes, highest score first.
    """
    anchors, boxes, scores, classes = _candidates(prediction, num_classes, conf)
    if len(scores) == 0:
        return anchors, boxes, scores, classes
    order = np.argsort(-scores, kind="stable")[:MAX_NMS]
    anchors, boxes, scores, classes = anchors[order], boxes[order], scores[order], classes[order]
    offset_boxes = boxes + (classes.astype(np.float32) * np.float32(MAX_WH))[:, None]
    keep = nms(offset_boxes, scores, iou, max_keep=max_det)
    return anchors[keep], boxes[keep], scores[keep], classes[keep]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS like ``torchvision.ops.nms``: indices kept, highest score first; suppresses IoU ``> iou``.

    Stops once `max_keep` boxes are kept, which gives the first `max_keep` of the full result.
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for position, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        rest = order[position + 1 :]
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            continue
        inter_w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        inter_h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = inter_w * inter_h
        overlap = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[overlap > iou]] = True
    return np.asarray(keep, dtype=np.int64)


def scale_boxes_to_original(boxes: np.ndarray, geometry: LetterboxGeometry) -> np.ndarray:
    """Map xyxy boxes from network-input pixels back to the original image and clip them to it."""
    scaled = boxes.astype(np.float32, copy=True)
    scaled[:, [0, 2]] -= geometry.pad_left
    scaled[:, [1, 3]] -= geometry.pad_top
    scaled /= np.float32(geometry.ratio)
    height, width = geometry.original_shape
    scaled[:, 0::2] = np.clip(scaled[:, 0::2], 0, width)
    scaled[:, 1::2] = np.clip(scaled[:, 1::2], 0, height)
    return scaled


def postprocess(
    output: np.ndarray,
    geometry: LetterboxGeometry,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
) -> Detections:
    """Raw ``[1, 4 + nc, A]`` output of one image -> its detections on the original image (see module doc)."""
    prediction = check_raw_output(output)
    _, boxes, scores, classes = select_anchors(prediction, prediction.shape[0] - 4, conf, iou, max_det)
    if len(scores) == 0:
        return Detections.empty()
    return Detections(scale_boxes_to_original(boxes, geometry), scores, classes)
