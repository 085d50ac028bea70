"""COCO box mAP in numpy, replicating ``pycocotools.cocoeval.COCOeval`` (iouType ``bbox``).

Same semantics as ``COCOeval.evaluate() / accumulate() / summarize()`` for the ``stats[0..2]`` numbers
(area range ``all``, ``maxDets=100``), given every ground-truth box has ``iscrowd=0``:

* IoU thresholds ``.50:.05:.95``; recall thresholds ``0:.01:1`` (101-point interpolation);
* per image and class, detections sorted by score (stable) and cut to the best ``max_dets``;
* greedy matching in score order: each detection takes the unmatched ground truth of its class with
  the highest IoU ``>= threshold`` (the later one on ties, as COCOeval's loop does);
* precision made monotone from the right, sampled at the recall thresholds (0 past the last recall);
* classes without ground truth are left out of the mean; images without ground truth still count,
  their detections being false positives.

The test suite checks agreement with pycocotools on real detections (``tests/test_evaluation.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from yolograph.errors import DataError
from yolograph.evaluation.postprocess import Detections

# Exactly as COCOeval's Params builds them, so float comparisons round the same way.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = 100


@dataclass(frozen=True)
class GroundTruth:
    """Ground truth of one image: ``boxes`` float64 ``[M, 4]`` xyxy pixels and ``classes`` int64 ``[M]``."""

    boxes: np.ndarray
    classes: np.ndarray

    @staticmethod
    def from_yolo_labels(labels: np.ndarray, image_shape: tuple[int, int]) -> GroundTruth:
        """From ``[N, 5]`` normalised ``cls, cx, cy, w, h`` rows and the image's ``(height, width)``."""
        height, width = image_shape
        labels = np.asarray(labels, dtype=np.float64).reshape(-1, 5)
        cx, cy, w, h = labels[:, 1] * width, labels[:, 2] * height, labels[:, 3] * width, labels[:, 4] * height
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        return GroundTruth(boxes, labels[:, 0].astype(np.int64))


@dataclass(frozen=True)
class CocoStats:
    """COCOeval's ``stats[0]`` (mAP50-95), ``stats[1]`` (mAP50) and ``stats[2]`` (mAP75)."""

    map50_95: float
    map50: float
    map75: float


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``x1, y1, x2, y2`` -> COCO ``x, y, w, h`` in float64 (the form COCOeval computes IoU on)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def coco_box_iou(detections_xywh: np.ndarray, truths_xywh: np.ndarray) -> np.ndarray:
    """``[D, G]`` IoU computed as pycocotools' ``bbIou`` does (non-crowd), in float64."""
    d = detections_xywh[:, None, :]
    g = truths_xywh[None, :, :]
    inter_w = np.minimum(d[..., 0] + d[..., 2], g[..., 0] + g[..., 2]) - np.maximum(d[..., 0], g[..., 0])
    inter_h = np.minimum(d[..., 1] + d[..., 3], g[..., 1] + g[..., 3]) - np.maximum(d[..., 1], g[..., 1])
    overlap = (inter_w > 0) & (inter_h > 0)
    inter = np.where(overlap, inter_w * inter_h, 0.0)
    union = d[..., 2] * d[..., 3] + g[..., 2] * g[..., 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / union, 0.0)


def match_detections(ious: np.ndarray, iou_thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """``[T, D]`` bool: whether each detection (in score order) matches a ground truth at each threshold."""
    num_dets, num_truths = ious.shape
    matched = np.zeros((len(iou_thresholds), num_dets), dtype=bool)
    if num_dets == 0 or num_truths == 0:
        return matched
    thresholds = np.minimum(iou_thresholds, 1 - 1e-10)[:, None]
    truth_taken = np.zeros((len(iou_thresholds), num_truths), dtype=bool)
    rows = np.arange(len(iou_thresholds))
    for det in range(num_dets):
        eligible = ~truth_taken & (ious[det][None, :] >= thresholds)
        found = eligible.any(axis=1)
        if not found.any():
            continue
        # COCOeval keeps the last ground truth among equal best IoUs: take argmax over the reversed row.
        candidates = np.where(eligible, ious[det][None, :], -1.0)[:, ::-1]
        best = num_truths - 1 - candidates.argmax(axis=1)
        matched[found, det] = True
        truth_taken[rows[found], best[found]] = True
    return matched


def interpolated_precision(matched: np.ndarray, num_truths: int) -> np.ndarray:
    """``[T, R]`` precision at the recall thresholds, from ``[T, D]`` matches of score-sorted detections."""
    precision = np.zeros((matched.shape[0], len(RECALL_THRESHOLDS)))
    num_dets = matched.shape[1]
    if num_dets == 0:
        return precision
    tp_sum = np.cumsum(matched, axis=1).astype(float)
    fp_sum = np.cumsum(~matched, axis=1).astype(float)
    for t in range(matched.shape[0]):
        recall = tp_sum[t] / num_truths
        prec = tp_sum[t] / (fp_sum[t] + tp_sum[t] + np.spacing(1))
        prec = np.maximum.accumulate(prec[::-1])[::-1]  # COCOeval's right-to-left envelope loop
        positions = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
        inside = positions < num_dets
        precision[t, inside] = prec[positions[inside]]
    return precision


def coco_map(
    ground_truths: Sequence[GroundTruth], detections: Sequence[Detections], max_dets: int = MAX_DETS
) -> CocoStats:
    """COCO mAP50-95 / mAP50 / mAP75 of `detections` against `ground_truths` (one entry per image, same order)."""
    if len(ground_truths) != len(detections):
        raise ValueError("ground_truths and detections must have one entry per image")
    accumulator = ApAccumulator(max_dets)
    for truth, dets in zip(ground_truths, detections):
        accumulator.add_image(np.asarray(dets.classes), np.asarray(dets.scores), truth.classes,
                              lambda d, g, dets=dets, truth=truth: coco_box_iou(
                                  xyxy_to_xywh(np.asarray(dets.boxes)[d]), xyxy_to_xywh(truth.boxes[g])))
    return accumulator.result()


Similarity = Callable[[np.ndarray, np.ndarray], np.ndarray]


class ApAccumulator:
    """COCO AP built one image at a time, for any similarity (box IoU, mask IoU, OKS, rotated IoU).

    Per image and class the detections are sorted by score, cut to `max_dets` and matched greedily
    (`match_detections`); only the scores and ``[T, D]`` matches are kept, so masks never pile up.
    `result` is exactly what `coco_map` computes when the similarity is COCO's box IoU.
    """

    def __init__(self, max_dets: int = MAX_DETS) -> None:
        self.max_dets = max_dets
        self._scores: dict[int, list[np.ndarray]] = {}
        self._matches: dict[int, list[np.ndarray]] = {}
        self._truths: dict[int, int] = {}

    def add_image(self, det_classes: np.ndarray, det_scores: np.ndarray, truth_classes: np.ndarray,
                  similarity: Similarity) -> None:
        """One image: `similarity(det_indices, truth_indices)` gives the ``[D, G]`` overlaps of a subset."""
        det_classes, truth_classes = np.asarray(det_classes), np.asarray(truth_classes)
        det_scores = np.asarray(det_scores, dtype=np.float64)
        for cls in np.unique(np.concatenate([det_classes, truth_classes]).astype(np.int64)):
            truths = np.flatnonzero(truth_classes == cls)
            self._truths[int(cls)] = self._truths.get(int(cls), 0) + len(truths)
            dets = np.flatnonzero(det_classes == cls)
            dets = dets[np.argsort(-det_scores[dets], kind="mergesort")[: self.max_dets]]
            if len(dets) == 0:
                continue
            ious = similarity(dets, truths) if len(truths) else np.zeros((len(dets), 0))
            self._scores.setdefault(int(cls), []).append(det_scores[dets])
            self._matches.setdefault(int(cls), []).append(match_detections(np.asarray(ious, dtype=np.float64)))

    def result(self) -> CocoStats:
        classes = sorted(c for c, n in self._truths.items() if n > 0)
        if not classes:
            raise DataError("The evaluated images have no ground-truth objects, so mAP is undefined; "
                            "evaluate on labelled images (or a reference model that finds objects in them).")
        per_class = [self._class_precision(c) for c in classes]
        precision = np.stack(per_class, axis=1)  # [T, K, R]
        index_50 = int(np.argmax(IOU_THRESHOLDS == 0.5))
        index_75 = int(np.argmax(IOU_THRESHOLDS == 0.75))
        return CocoStats(
            map50_95=float(precision.mean()),
            map50=float(precision[index_50].mean()),
            map75=float(precision[index_75].mean()),
        )

    def _class_precision(self, cls: int) -> np.ndarray:
        if cls not in self._scores:
            return np.zeros((len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)))
        all_scores = np.concatenate(self._scores[cls])
        order = np.argsort(-all_scores, kind="mergesort")
        return interpolated_precision(np.concatenate(self._matches[cls], axis=1)[:, order], self._truths[cls])
