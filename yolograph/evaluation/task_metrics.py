"""Each task's accuracy measure over per-image `Predictions` against ground truth given as `Predictions`.

* detect: COCO box mAP50-95;  segment: mask mAP50-95 (and box);  obb: mAP50-95 with the exact IoU of the
  rotated rectangles;  pose: OKS mAP50-95 (and box), OKS as Ultralytics ``kpt_iou`` (COCO sigmas for 17
  keypoints, else 1/K; area = 0.53 x the truth box area);  classify: top-1 and top-5 accuracy.

Ground truth comes from label files (`labels.py`) or from a reference model's confident predictions
(`pseudo_labels`), so the same scorer gives labelled mAP and label-free agreement.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from yolograph.errors import DataError
from yolograph.evaluation.masks import mask_iou
from yolograph.evaluation.metrics import (
    MAX_DETS,
    ApAccumulator,
    coco_box_iou,
    xyxy_to_xywh,
)
from yolograph.evaluation.predictions import Predictions
from yolograph.evaluation.rotated import rotated_iou

COCO_KEYPOINT_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62,
                                 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]) / 10.0
OKS_AREA_FACTOR = 0.53  # Ultralytics: a person's segment covers about 53% of its box
KEYPOINT_VISIBLE = 0.5  # a reference keypoint counts as a label when its visibility is at least this
PRIMARY_METRIC = {"detect": "box mAP50-95", "segment": "mask mAP50-95", "pose": "OKS mAP50-95",
                  "obb": "rotated-IoU mAP50-95", "classify": "top-1"}


@dataclass(frozen=True)
class TaskScore:
    """The task's primary score (`value`, named `metric`), its 0.5-threshold form and secondary scores."""

    task: str
    metric: str
    value: float
    value50: float | None
    images: int
    extra: dict[str, float]

    def to_json(self) -> dict:
        return {"task": self.task, "metric": self.metric, "value": self.value, "value50": self.value50,
                "images": self.images, **self.extra}

    def line(self) -> str:
        at50 = f"  @0.5 {self.value50:.4f}" if self.value50 is not None else ""
        rest = "".join(f"  {k} {v:.4f}" for k, v in self.extra.items())
        return f"{self.metric} {self.value:.4f}{at50}{rest}  images {self.images}"


def keypoint_sigmas(count: int) -> np.ndarray:
    return COCO_KEYPOINT_SIGMAS if count == 17 else np.full(count, 1.0 / count)


def oks(detections: np.ndarray, truths: np.ndarray, truth_boxes: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """``[D, G]`` object keypoint similarity of ``[D, K, 3]`` against ``[G, K, 3]`` keypoints
    (truth keypoints with visibility 0 are left out), as Ultralytics ``kpt_iou``."""
    area = (truth_boxes[:, 2] - truth_boxes[:, 0]) * (truth_boxes[:, 3] - truth_boxes[:, 1]) * OKS_AREA_FACTOR
    distance = ((detections[:, None, :, 0] - truths[None, :, :, 0]) ** 2
                + (detections[:, None, :, 1] - truths[None, :, :, 1]) ** 2)
    error = distance / ((2 * sigmas) ** 2 * (area[None, :, None] + 1e-9) * 2)
    visible = truths[..., 2] > 0
    return (np.exp(-error) * visible[None]).sum(axis=-1) / (visible.sum(axis=-1)[None] + 1e-9)


def pseudo_labels(reference: Predictions, conf: float = 0.25) -> Predictions:
    """A reference model's confident predictions as ground truth.

    Keypoints count where the reference sees them (visibility >= 0.5); an instance with none visible keeps
    all, so a copy of the reference still matches it. Classify: the reference's top-1 is the label.
    """
    if reference.task == "classify":
        return reference
    labels = reference.confident(conf)
    if labels.keypoints is not None and len(labels):
        points = labels.keypoints.copy()
        visible = points[..., 2] >= KEYPOINT_VISIBLE
        visible[~visible.any(axis=1)] = True
        points[..., 2] = visible.astype(np.float32)
        labels = replace(labels, keypoints=points)
    return labels


class TaskScorer:
    """Accumulates one task's score over images: `add(predictions, truth)` per image, then `result()`."""

    def __init__(self, task: str, kpt_count: int | None = None, max_dets: int = MAX_DETS) -> None:
        self.task = task
        self.images = 0
        self.primary = ApAccumulator(max_dets)
        self.boxes = ApAccumulator(max_dets) if task in ("segment", "pose") else None
        self.sigmas = keypoint_sigmas(kpt_count) if kpt_count else None
        self.top1 = 0
        self.top5 = 0

    def add(self, predictions: Predictions, truth: Predictions) -> None:
        self.images += 1
        if self.task == "classify":
            label = int(truth.top5[0])
            self.top1 += int(predictions.top5[0] == label)
            self.top5 += int(label in predictions.top5)
            return
        self.primary.add_image(predictions.classes, predictions.scores, truth.classes,
                               self._similarity(predictions, truth))
        if self.boxes is not None:
            self.boxes.add_image(predictions.classes, predictions.scores, truth.classes,
                                 lambda d, g: _box_iou(predictions, truth, d, g))

    def result(self) -> TaskScore:
        if self.images == 0:
            raise DataError("No images were scored; pass at least one image.")
        metric = PRIMARY_METRIC[self.task]
        if self.task == "classify":
            return TaskScore(self.task, metric, self.top1 / self.images, None, self.images,
                             {"top5": self.top5 / self.images})
        stats = self.primary.result()
        extra = {}
        if self.boxes is not None:
            box = self.boxes.result()
            extra = {"box_map50_95": box.map50_95, "box_map50": box.map50}
        return TaskScore(self.task, metric, stats.map50_95, stats.map50, self.images, extra)

    def _similarity(self, predictions: Predictions, truth: Predictions):
        if self.task == "segment":
            return lambda d, g: mask_iou(predictions.masks[d], truth.masks[g])
        if self.task == "obb":
            return lambda d, g: rotated_iou(predictions.rotated[d], truth.rotated[g])
        if self.task == "pose":
            return lambda d, g: oks(predictions.keypoints[d].astype(np.float64), truth.keypoints[g].astype(np.float64),
                                    truth.boxes[g].astype(np.float64), self.sigmas)
        return lambda d, g: _box_iou(predictions, truth, d, g)


def _box_iou(predictions: Predictions, truth: Predictions, d: np.ndarray, g: np.ndarray) -> np.ndarray:
    return coco_box_iou(xyxy_to_xywh(predictions.boxes[d]), xyxy_to_xywh(truth.boxes[g]))
