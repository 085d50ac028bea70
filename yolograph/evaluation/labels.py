"""YOLO-format labels of every task, read as ground-truth `Predictions` of one image.

One object a line, coordinates normalised to 0..1 (the Ultralytics formats):

* detect   ``cls cx cy w h`` (polygon lines become their box, as `read_label_file` does);
* segment  ``cls x1 y1 x2 y2 ...`` (a polygon of at least 3 points; a box line is its rectangle);
* pose     ``cls cx cy w h px1 py1 [v1] ...`` with ``K`` keypoints of ``D`` = 2 or 3 values;
* obb      ``cls x1 y1 x2 y2 x3 y3 x4 y4`` (the four corners), turned into ``cx, cy, w, h, angle``
  by the minimum-area rectangle, as Ultralytics ``xyxyxyxy2xywhr``.

Classification datasets are folders named after the classes (``root/<name>/*.jpg``), see
`classify_labels`. A missing label file means no objects.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from yolograph.errors import DataError
from yolograph.evaluation.dataset import read_label_file
from yolograph.evaluation.masks import mask_shape, polygons_to_masks
from yolograph.evaluation.predictions import Predictions
from yolograph.evaluation.rotated import enclosing_xyxy, regularize
from yolograph.evaluation.tasks import TaskLayout


def read_task_labels(path: Path, layout: TaskLayout, image_shape: tuple[int, int],
                     mask_scale: float = 1.0) -> Predictions:
    """The labels of one image of `image_shape` (height, width) for the task of `layout`."""
    if layout.task == "detect":
        rows = read_label_file(path)
        height, width = image_shape
        cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
        return _truth("detect", image_shape, boxes, rows[:, 0])
    lines = _read_lines(path, check_range=layout.task != "pose")  # pose visibility flags are 0, 1, 2
    if layout.task == "segment":
        return _segment_labels(lines, path, image_shape, mask_scale)
    if layout.task == "pose":
        return _pose_labels(lines, path, image_shape, layout.kpt_shape)
    if layout.task == "obb":
        return _obb_labels(lines, path, image_shape)
    raise DataError(f"{layout.task} labels are not label files; give a folder per class (root/<name>/*.jpg).")


def classify_labels(image_path: Path, layout: TaskLayout) -> Predictions:
    """The class of an image in a ``root/<class name>/`` folder (or a folder named by the class id)."""
    folder = image_path.parent.name
    by_name = {name: cls for cls, name in layout.names.items()}
    cls = by_name.get(folder, int(folder) if folder.isdigit() else None)
    if cls is None or not 0 <= cls < layout.num_classes:
        raise DataError(f"The image {image_path} is in a folder named {folder!r}, which is no class of the model; "
                        "a classification dataset holds one folder per class, named as in the model's names.")
    empty = np.zeros(0, np.float32)
    return Predictions("classify", (0, 0), np.zeros((0, 4), np.float32), empty, np.zeros(0, np.int64),
                       top5=np.array([cls], np.int64), top5_scores=np.ones(1, np.float32))


def _truth(task: str, image_shape: tuple[int, int], boxes: np.ndarray, classes: np.ndarray, **extra) -> Predictions:
    return Predictions(task, image_shape, boxes.astype(np.float32).reshape(-1, 4), np.ones(len(boxes), np.float32),
                       np.asarray(classes).astype(np.int64), **extra)


def _read_lines(path: Path, check_range: bool = True) -> list[tuple[int, list[float]]]:
    """(line number, values) of each non-empty line, class id checked and (`check_range`) values in 0..1."""
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"The label file {path} cannot be read ({exc}); fix or remove it.") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"line {number} of the label file {path}"
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise DataError(f"{where} has a value that is not a number ({line.strip()!r}); fix the line.") from None
        if values[0] < 0 or values[0] != int(values[0]):
            raise DataError(f"{where} has class {line.split()[0]!r}; class ids are integers >= 0.")
        if check_range:
            _check_normalised(np.array(values[1:]), where, line)
        rows.append((number, values))
    return rows


def _check_normalised(coords: np.ndarray, where: str, line: str) -> None:
    if coords.size and (not np.all(np.isfinite(coords)) or coords.min() < 0.0 or coords.max() > 1.0):
        raise DataError(f"{where} has coordinates outside 0..1 ({line.strip()!r}); labels must be normalised.")


def _segment_labels(lines, path: Path, image_shape: tuple[int, int], mask_scale: float) -> Predictions:
    height, width = image_shape
    polygons, classes = [], []
    for number, values in lines:
        coords = np.array(values[1:])
        if len(coords) == 4:  # a box line: its rectangle
            cx, cy, w, h = coords
            coords = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy - h / 2, cx + w / 2, cy + h / 2, cx - w / 2, cy + h / 2])
        if len(coords) < 6 or len(coords) % 2:
            raise DataError(f"line {number} of the label file {path} has {len(values)} values; a segment label is "
                            "'class x1 y1 x2 y2 x3 y3 ...' (at least 3 points).")
        polygons.append(coords.reshape(-1, 2) * [width, height])
        classes.append(int(values[0]))
    boxes = np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in polygons]).reshape(-1, 4)
    shape = mask_shape(image_shape, mask_scale)
    scale = np.array([shape[1] / width, shape[0] / height])
    masks = polygons_to_masks([p * scale for p in polygons], shape)
    return _truth("segment", image_shape, boxes, np.array(classes), masks=masks)


def _pose_labels(lines, path: Path, image_shape: tuple[int, int], kpt_shape: tuple[int, int]) -> Predictions:
    count, dims = kpt_shape
    height, width = image_shape
    boxes, points, classes = [], [], []
    for number, values in lines:
        if len(values) not in (5 + count * 2, 5 + count * 3):
            raise DataError(f"line {number} of the label file {path} has {len(values)} values; a pose label of "
                            f"{count} keypoints is 'class cx cy w h' then {count} x {dims} keypoint values "
                            f"({5 + count * dims} values).")
        given = np.array(values[5:]).reshape(count, -1)
        _check_normalised(np.concatenate([values[1:5], given[:, :2].reshape(-1)]),
                          f"line {number} of the label file {path}", " ".join(map(str, values)))
        cx, cy, w, h = values[1:5]
        boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
        xy = given[:, :2] * [width, height]
        # Two values a keypoint: a point at (0, 0) is Ultralytics' "not labelled".
        visible = given[:, 2] if given.shape[1] == 3 else (given[:, :2].sum(axis=1) > 0).astype(float)
        points.append(np.concatenate([xy, visible[:, None]], axis=1))
        classes.append(int(values[0]))
    keypoints = np.array(points, np.float32).reshape(-1, count, 3)
    return _truth("pose", image_shape, np.array(boxes).reshape(-1, 4), np.array(classes), keypoints=keypoints)


def _obb_labels(lines, path: Path, image_shape: tuple[int, int]) -> Predictions:
    height, width = image_shape
    rboxes, classes = [], []
    for number, values in lines:
        if len(values) != 9:
            raise DataError(f"line {number} of the label file {path} has {len(values)} values; an OBB label is "
                            "'class x1 y1 x2 y2 x3 y3 x4 y4' (the four corners).")
        corners = (np.array(values[1:]).reshape(4, 2) * [width, height]).astype(np.float32)
        (cx, cy), (w, h), degrees = cv2.minAreaRect(corners)
        rboxes.append([cx, cy, w, h, np.deg2rad(degrees)])
        classes.append(int(values[0]))
    rotated = regularize(np.array(rboxes, np.float32).reshape(-1, 5))
    return _truth("obb", image_shape, enclosing_xyxy(rotated), np.array(classes), rotated=rotated)
