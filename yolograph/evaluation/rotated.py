"""Rotated boxes ``cx, cy, w, h, angle`` (radians): Ultralytics' regularisation and NMS, exact rotated IoU.

NMS follows Ultralytics ``nms_rotated``: ProbIoU (the Bhattacharyya overlap of the boxes' Gaussians)
and its "fast" rule, a box is kept when its ProbIoU with every higher-scored box is ``<= iou`` (whether
or not that box was kept). mAP uses the exact IoU of the two rectangles (polygon intersection).
"""

from __future__ import annotations

import cv2
import numpy as np

EPS = 1e-7
NMS_BLOCK = 1024  # columns of the ProbIoU matrix computed at a time, so 30000 candidates fit in memory


def regularize(rboxes: np.ndarray) -> np.ndarray:
    """Ultralytics ``regularize_rboxes``: w >= h (swapping turns the angle by pi/2), angle in [0, pi)."""
    cx, cy, w, h, angle = (rboxes[:, i] for i in range(5))
    swap = w <= h
    long_side, short_side = np.where(swap, h, w), np.where(swap, w, h)
    angle = np.where(swap, angle + np.pi / 2, angle) % np.pi
    return np.stack([cx, cy, long_side, short_side, angle], axis=1).astype(np.float32)


def corners(rboxes: np.ndarray) -> np.ndarray:
    """``[N, 4, 2]`` corner points of ``[N, 5]`` rotated boxes (Ultralytics ``xywhr2xyxyxyxy`` order)."""
    rboxes = np.asarray(rboxes, dtype=np.float64).reshape(-1, 5)
    center = rboxes[:, :2]
    cos, sin = np.cos(rboxes[:, 4]), np.sin(rboxes[:, 4])
    half_w = np.stack([cos, sin], axis=1) * (rboxes[:, 2:3] / 2)
    half_h = np.stack([-sin, cos], axis=1) * (rboxes[:, 3:4] / 2)
    return np.stack([center + half_w + half_h, center + half_w - half_h,
                     center - half_w - half_h, center - half_w + half_h], axis=1)


def enclosing_xyxy(rboxes: np.ndarray) -> np.ndarray:
    """The axis-aligned box around each rotated box, ``[N, 4]`` float32."""
    points = corners(rboxes)
    return np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1).astype(np.float32)


def _covariance(rboxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = rboxes[..., 2] ** 2 / 12, rboxes[..., 3] ** 2 / 12
    cos, sin = np.cos(rboxes[..., 4]), np.sin(rboxes[..., 4])
    return a * cos**2 + b * sin**2, a * sin**2 + b * cos**2, (a - b) * cos * sin


def probiou_pairs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """ProbIoU of each row of `first` with the same row of `second` (any broadcastable ``[..., 5]``),
    as Ultralytics ``batch_probiou`` computes it."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    x1, y1, x2, y2 = first[..., 0], first[..., 1], second[..., 0], second[..., 1]
    a1, b1, c1 = _covariance(first)
    a2, b2, c2 = _covariance(second)
    denominator = (a1 + a2) * (b1 + b2) - (c1 + c2) ** 2 + EPS
    t1 = ((a1 + a2) * (y1 - y2) ** 2 + (b1 + b2) * (x1 - x2) ** 2) / denominator * 0.25
    t2 = ((c1 + c2) * (x2 - x1) * (y1 - y2)) / denominator * 0.5
    t3 = np.log(((a1 + a2) * (b1 + b2) - (c1 + c2) ** 2)
                / (4 * np.sqrt(np.clip(a1 * b1 - c1**2, 0, None) * np.clip(a2 * b2 - c2**2, 0, None)) + EPS) + EPS) * 0.5
    bhattacharyya = np.clip(t1 + t2 + t3, EPS, 100.0)
    hellinger = np.sqrt(1.0 - np.exp(-bhattacharyya) + EPS)
    return 1 - hellinger


def probiou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``[N, M]`` ProbIoU of rotated boxes, as Ultralytics ``batch_probiou``."""
    return probiou_pairs(np.asarray(first)[:, None, :], np.asarray(second)[None, :, :])


def _may_overlap(first: np.ndarray, second: np.ndarray, iou: float) -> np.ndarray:
    """``[N, M]`` False where ProbIoU is surely below `iou`: cheap, from the centre distance alone.

    The Bhattacharyya distance is at least ``|d|^2 / (4 lambda_max(S1 + S2))`` >= ``3 |d|^2 / (w1^2 + h1^2
    + w2^2 + h2^2)``, and ProbIoU >= `iou` needs it below ``-ln(1 - (1 - iou)^2)``; a factor 2 of margin
    covers the epsilons.
    """
    limit = 2 * -np.log(max(1 - (1 - iou) ** 2, 1e-12))
    spread = (first[:, None, 2] ** 2 + first[:, None, 3] ** 2 + second[None, :, 2] ** 2 + second[None, :, 3] ** 2)
    distance = (first[:, None, 0] - second[None, :, 0]) ** 2 + (first[:, None, 1] - second[None, :, 1]) ** 2
    return 3 * distance <= limit * spread + 1e-9


def nms_rotated(rboxes: np.ndarray, scores: np.ndarray, iou: float, max_keep: int | None = None) -> np.ndarray:
    """Indices kept by Ultralytics' fast rotated NMS, highest score first (at most `max_keep`)."""
    order = np.argsort(-scores, kind="stable")
    ordered = np.asarray(rboxes, np.float64)[order]
    keep: list[int] = []
    for start in range(0, len(order), NMS_BLOCK):
        stop = min(start + NMS_BLOCK, len(order))
        columns = ordered[start:stop]
        near = _may_overlap(ordered[:stop], columns, iou)
        near &= np.arange(stop)[:, None] < np.arange(start, stop)[None, :]  # only higher-scored boxes suppress
        rows, cols = np.nonzero(near)
        highest = np.zeros(stop - start)
        np.maximum.at(highest, cols, probiou_pairs(ordered[rows], columns[cols]))
        kept = np.flatnonzero(highest < iou) + start
        keep.extend(int(order[i]) for i in kept)
        if max_keep is not None and len(keep) >= max_keep:
            return np.asarray(keep[:max_keep], dtype=np.int64)
    return np.asarray(keep, dtype=np.int64)


def rotated_iou(detections: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """``[D, G]`` exact IoU of rotated rectangles (area of the polygon intersection over the union)."""
    detections, truths = np.asarray(detections).reshape(-1, 5), np.asarray(truths).reshape(-1, 5)
    result = np.zeros((len(detections), len(truths)))
    if result.size == 0:
        return result
    det_points, truth_points = corners(detections), corners(truths)
    det_areas = detections[:, 2] * detections[:, 3]
    truth_areas = truths[:, 2] * truths[:, 3]
    # Cheap rejection: rectangles whose enclosing circles do not meet cannot overlap.
    reach = (np.hypot(detections[:, 2], detections[:, 3])[:, None] + np.hypot(truths[:, 2], truths[:, 3])[None]) / 2
    distance = np.hypot(detections[:, None, 0] - truths[None, :, 0], detections[:, None, 1] - truths[None, :, 1])
    for d, g in zip(*np.nonzero(distance < reach)):
        area, _ = cv2.intersectConvexConvex(det_points[d].astype(np.float32), truth_points[g].astype(np.float32))
        union = det_areas[d] + truth_areas[g] - area
        result[d, g] = area / union if union > 0 else 0.0
    return result
