"""Accuracy evaluation: YOLO dataset reading, Ultralytics letterbox, decode + NMS, COCO mAP.

Typical use, with any backend's runner as `predict` (``[1,3,H,W]`` float32 -> raw ``[1,4+nc,A]``)::

    from yolograph.evaluation import evaluate
    result = evaluate(runner, coco128(), images="32:128")
    result.to_json()  # {"map50_95": ..., "map50": ..., "images": 96}

Calibration reuses the same preprocessing through `iter_image_tensors`.
"""

from yolograph.evaluation.dataset import (
    YoloDataset,
    dataset_from_image_paths,
    label_path_for,
    open_dataset,
    parse_index_range,
    read_label_file,
)
from yolograph.evaluation.evaluate import EvalResult, evaluate, predict_detections, resolve_dataset, score_detections
from yolograph.evaluation.metrics import CocoStats, GroundTruth, coco_map
from yolograph.evaluation.postprocess import Detections, postprocess
from yolograph.evaluation.preprocess import (
    LetterboxGeometry,
    iter_image_tensors,
    letterbox,
    normalize_imgsz,
    preprocess_image,
    read_image,
)

__all__ = [
    "CocoStats",
    "Detections",
    "EvalResult",
    "GroundTruth",
    "LetterboxGeometry",
    "YoloDataset",
    "coco_map",
    "dataset_from_image_paths",
    "evaluate",
    "iter_image_tensors",
    "label_path_for",
    "letterbox",
    "open_dataset",
    "normalize_imgsz",
    "parse_index_range",
    "postprocess",
    "predict_detections",
    "preprocess_image",
    "read_image",
    "read_label_file",
    "resolve_dataset",
    "score_detections",
]
