"""Draw `Predictions` on images: boxes with class names and scores, masks, keypoints and skeletons,
rotated boxes, top-5 classes; two models side by side.

Colours are Ultralytics' palette (one per class), so pictures look like what `yolo predict` draws.
All drawing is OpenCV on HxWx3 uint8 BGR images; the input image is never modified.
"""

from __future__ import annotations

import cv2
import numpy as np

from yolograph.evaluation.predictions import Predictions
from yolograph.evaluation.rotated import corners
from yolograph.evaluation.tasks import TaskLayout

PALETTE_HEX = ("FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
               "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7")
# COCO person skeleton (1-based keypoint pairs, as Ultralytics draws it) and the colours of limbs/points.
COCO_SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
                 (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))
KEYPOINT_VISIBLE = 0.5
MASK_ALPHA = 0.5
FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(cls: int) -> tuple[int, int, int]:
    """The BGR colour of class `cls`."""
    code = PALETTE_HEX[int(cls) % len(PALETTE_HEX)]
    red, green, blue = (int(code[i : i + 2], 16) for i in (0, 2, 4))
    return blue, green, red


def draw_predictions(image_bgr: np.ndarray, predictions: Predictions, layout: TaskLayout) -> np.ndarray:
    """A copy of `image_bgr` with `predictions` drawn on it as the task shows them."""
    canvas = image_bgr.copy()
    scale = _line_width(canvas)
    if predictions.task == "classify":
        return _draw_top5(canvas, predictions, layout, scale)
    if predictions.masks is not None:
        _draw_masks(canvas, predictions)
    for i in range(len(predictions) - 1, -1, -1):  # best last, so it is drawn on top
        color = class_color(predictions.classes[i])
        label = f"{layout.name(predictions.classes[i])} {predictions.scores[i]:.2f}"
        if predictions.rotated is not None:
            points = corners(predictions.rotated[i : i + 1])[0]
            cv2.polylines(canvas, [np.round(points).astype(np.int32).reshape(-1, 1, 2)], True, color, scale, cv2.LINE_AA)
            anchor = tuple(int(v) for v in points[np.argmin(points[:, 1])])
        else:
            x1, y1, x2, y2 = (round(v) for v in predictions.boxes[i])
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, scale, cv2.LINE_8)  # crisp, exact-colour edges
            anchor = (x1, y1)
        if predictions.keypoints is not None:
            _draw_keypoints(canvas, predictions.keypoints[i], scale)
        _draw_label(canvas, label, anchor, color, scale)
    return canvas


def side_by_side(left: np.ndarray, right: np.ndarray, titles: tuple[str, str]) -> np.ndarray:
    """Two annotated images of the same frame next to each other, each under its title."""
    height = max(left.shape[0], right.shape[0])
    panels = []
    for image, title in zip((left, right), titles):
        pad = np.full((height - image.shape[0], image.shape[1], 3), 255, np.uint8)
        panel = np.vstack([image, pad]) if len(pad) else image
        bar = np.full((max(24, height // 20), image.shape[1], 3), 255, np.uint8)
        size = bar.shape[0] / 40
        cv2.putText(bar, title, (6, int(bar.shape[0] * 0.75)), FONT, size, (0, 0, 0), max(1, int(size * 2)), cv2.LINE_AA)
        panels.append(np.vstack([bar, panel]))
    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    return np.hstack([panels[0], gap, panels[1]])


def _line_width(image: np.ndarray) -> int:
    return max(1, round(sum(image.shape[:2]) / 2 * 0.003))  # Ultralytics' default line width rule


def _draw_label(canvas: np.ndarray, text: str, anchor: tuple[int, int], color: tuple[int, int, int], scale: int) -> None:
    font_scale = scale / 3
    thickness = max(scale - 1, 1)
    (width, height), _ = cv2.getTextSize(text, FONT, font_scale, thickness)
    x, y = max(anchor[0], 0), anchor[1]
    outside = y - height - 3 >= 0  # the label above the box when it fits, else inside it
    top = y - height - 3 if outside else y
    cv2.rectangle(canvas, (x, top), (x + width, top + height + 3), color, -1, cv2.LINE_AA)
    text_color = (0, 0, 0) if sum(color) > 450 else (255, 255, 255)
    cv2.putText(canvas, text, (x, top + height + 1), FONT, font_scale, text_color, thickness, cv2.LINE_AA)


def _draw_masks(canvas: np.ndarray, predictions: Predictions) -> None:
    height, width = canvas.shape[:2]
    for i in range(len(predictions) - 1, -1, -1):
        mask = predictions.masks[i]
        if mask.shape != (height, width):
            mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
        color = np.array(class_color(predictions.classes[i]), np.float32)
        canvas[mask] = (canvas[mask] * (1 - MASK_ALPHA) + color * MASK_ALPHA).astype(np.uint8)


def _draw_keypoints(canvas: np.ndarray, points: np.ndarray, scale: int) -> None:
    visible = points[:, 2] >= KEYPOINT_VISIBLE
    radius = max(2, scale + 1)
    if len(points) == 17:
        for a, b in COCO_SKELETON:
            if visible[a - 1] and visible[b - 1]:
                start = tuple(round(v) for v in points[a - 1, :2])
                stop = tuple(round(v) for v in points[b - 1, :2])
                cv2.line(canvas, start, stop, class_color(a + 2), max(1, scale - 1), cv2.LINE_AA)
    for k, (x, y, _) in enumerate(points):
        if visible[k]:
            cv2.circle(canvas, (round(x), round(y)), radius, class_color(k + 9), -1, cv2.LINE_AA)


def _draw_top5(canvas: np.ndarray, predictions: Predictions, layout: TaskLayout, scale: int) -> np.ndarray:
    font_scale = max(0.5, scale / 3)
    thickness = max(1, scale - 1)
    y = 0
    for cls, score in zip(predictions.top5, predictions.top5_scores):
        text = f"{layout.name(cls)} {score:.2f}"
        (width, height), _ = cv2.getTextSize(text, FONT, font_scale, thickness)
        y += height + 8
        cv2.rectangle(canvas, (4, y - height - 4), (8 + width, y + 4), (255, 255, 255), -1)
        cv2.putText(canvas, text, (6, y), FONT, font_scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas
