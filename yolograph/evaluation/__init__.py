"""Accuracy evaluation: YOLO dataset reading, Ultralytics letterbox, decode + NMS, COCO mAP.

Typical use, with any backend's runner as `predict` (``[1,3,H,W]`` float32 -> raw ``[1,4+nc,A]``)::

    from yolograph.evaluation import evaluate
    result = evaluate(runner, coco128(), images="32:128")
    result.to_json()  # {"map50_95": ..., "map50": ..., "images": 96}

Every task (detect, segment, pose, obb, classify), labelled or against a reference model::

    from yolograph.evaluation import TaskModel, agreement, evaluate_task
    agreement("int8.onnx", "float.onnx", coco128(), images="32:128").value  # 1.0 = same predictions
    evaluate_task("yolov8n-seg.onnx", "dataset/images/val").value          # mask mAP50-95 on labels
    TaskModel.open("model.onnx").predict("image.jpg")                       # Predictions in image pixels

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
from yolograph.evaluation.evaluate import (
    EvalResult,
    evaluate,
    predict_detections,
    resolve_dataset,
    score_detections,
)
from yolograph.evaluation.fidelity import agreement, evaluate_task
from yolograph.evaluation.inference import TaskModel
from yolograph.evaluation.metrics import CocoStats, GroundTruth, coco_map
from yolograph.evaluation.postprocess import Detections, postprocess
from yolograph.evaluation.predictions import Predictions, decode
from yolograph.evaluation.preprocess import (
    LetterboxGeometry,
    iter_image_tensors,
    letterbox,
    normalize_imgsz,
    preprocess_image,
    read_image,
)
from yolograph.evaluation.task_metrics import TaskScore
from yolograph.evaluation.tasks import TaskLayout

__all__ = [
    "CocoStats",
    "Detections",
    "EvalResult",
    "GroundTruth",
    "LetterboxGeometry",
    "Predictions",
    "TaskLayout",
    "TaskModel",
    "TaskScore",
    "YoloDataset",
    "agreement",
    "coco_map",
    "dataset_from_image_paths",
    "decode",
    "evaluate",
    "evaluate_task",
    "iter_image_tensors",
    "label_path_for",
    "letterbox",
    "normalize_imgsz",
    "open_dataset",
    "parse_index_range",
    "postprocess",
    "predict_detections",
    "preprocess_image",
    "read_image",
    "read_label_file",
    "resolve_dataset",
    "score_detections",
]
