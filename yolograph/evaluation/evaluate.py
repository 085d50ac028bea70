"""Score a detector on a YOLO dataset with COCO mAP: letterbox -> predict -> decode + NMS -> COCOeval.

Backends plug in through `predict`, a function from the ``[1, 3, H, W]`` float32 input tensor to the
raw ``[1, 4 + nc, A]`` output, so ONNX Runtime, TVM and TensorRT are scored by the same code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolograph.evaluation.dataset import (
    YoloDataset,
    dataset_from_image_paths,
    open_dataset,
)
from yolograph.evaluation.metrics import CocoStats, GroundTruth, coco_map
from yolograph.evaluation.postprocess import Detections, postprocess
from yolograph.evaluation.preprocess import normalize_imgsz, preprocess_image
from yolograph.progress import track

Predict = Callable[[np.ndarray], np.ndarray]
DataSource = YoloDataset | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class EvalResult:
    """COCO box mAP of a model on a set of images."""

    map50_95: float
    map50: float
    images: int

    def to_json(self) -> dict[str, float | int]:
        return {"map50_95": self.map50_95, "map50": self.map50, "images": self.images}


def resolve_dataset(data: DataSource, images: slice | str | None = None) -> YoloDataset:
    """A YoloDataset from a dataset, a dataset path (root, image folder or yaml) or a list of image paths,
    cut to `images` (a slice or a ``"32:128"`` range)."""
    if isinstance(data, YoloDataset):
        dataset = data
    elif isinstance(data, (str, os.PathLike)):
        dataset = open_dataset(data)
    else:
        dataset = dataset_from_image_paths([Path(p) for p in data])
    return dataset.subset(images)


def predict_detections(
    predict: Predict,
    image_paths: Sequence[Path],
    imgsz: int | tuple[int, int] = (640, 640),
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    label: str = "evaluate",
) -> tuple[list[Detections], list[tuple[int, int]]]:
    """Run `predict` on each image; its detections on the original image and each image's (height, width)."""
    size = normalize_imgsz(imgsz)
    detections: list[Detections] = []
    shapes: list[tuple[int, int]] = []
    for path in track(image_paths, label):
        tensor, geometry = preprocess_image(path, size)
        detections.append(postprocess(predict(tensor), geometry, conf=conf, iou=iou, max_det=max_det))
        shapes.append(geometry.original_shape)
    return detections, shapes


def score_detections(
    labels: Sequence[np.ndarray], detections: Sequence[Detections], shapes: Sequence[tuple[int, int]]
) -> CocoStats:
    """COCO mAP of per-image detections against per-image YOLO labels and image (height, width)."""
    truths = [GroundTruth.from_yolo_labels(lab, shape) for lab, shape in zip(labels, shapes)]
    return coco_map(truths, detections)


def evaluate(
    predict: Predict,
    data: DataSource,
    imgsz: int | tuple[int, int] = (640, 640),
    images: slice | str | None = None,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
) -> EvalResult:
    """COCO mAP50-95 and mAP50 of `predict` on the images `images` of `data`.

    `data` is a YoloDataset, a dataset root / image folder / dataset yaml, or a list of image paths;
    `images` is a slice or range string (``"32:128"``), None for all. Labels are read before inference,
    so a malformed label file fails fast.
    """
    dataset = resolve_dataset(data, images)
    labels = [dataset.labels(i) for i in range(len(dataset))]
    detections, shapes = predict_detections(predict, dataset.image_paths, imgsz, conf, iou, max_det)
    stats = score_detections(labels, detections, shapes)
    return EvalResult(map50_95=stats.map50_95, map50=stats.map50, images=len(dataset))
