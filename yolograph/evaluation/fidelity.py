"""Score a model of any task: against labels, or label-free against a reference model.

`agreement(candidate, reference, data)` is what a user without labels measures a pipeline with: the
reference's (usually the float model's) confident predictions (score >= 0.25) are the ground truth,
and the candidate is scored on them with its task's measure (`task_metrics`): a copy of the reference
scores 1.0. Predictions of zero area are left out on both sides (`drop_degenerate`).

`evaluate_task(model, data)` scores against YOLO label files (`labels.py`) or, for classify, a folder
per class. Both stream: one image at a time is predicted, scored and dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yolograph.errors import DataError
from yolograph.evaluation.dataset import IMAGE_SUFFIXES, label_path_for
from yolograph.evaluation.evaluate import DataSource, resolve_dataset
from yolograph.evaluation.inference import TaskModel
from yolograph.evaluation.labels import classify_labels, read_task_labels
from yolograph.evaluation.predictions import Predictions
from yolograph.evaluation.task_metrics import TaskScore, TaskScorer, pseudo_labels
from yolograph.evaluation.tasks import check_same_layout
from yolograph.progress import track

LABEL_CONF = 0.25  # a reference prediction at least this confident is a pseudo-label (Ultralytics' predict default)
EVAL_CONF = 0.001  # the candidate is scored on all its predictions, as Ultralytics val does
MAX_DET = 300  # NMS keeps at most this many predictions an image (Ultralytics' default)
EVAL_MASK_SCALE = 0.5  # masks are compared at half the image resolution, which bounds memory


def agreement(candidate: Any, reference: Any, data: DataSource, images: slice | str | None = None, *,
              conf: float = LABEL_CONF, threads: int = 0) -> TaskScore:
    """How well `candidate` reproduces `reference`'s confident predictions on the images of `data`.

    Both models are anything `TaskModel.open` takes (a path, a built-in name, a compiled artifact, a Model,
    a runner) or a TaskModel; they must be of the same task and class count.
    """
    candidate_model, reference_model = _open(candidate, threads, "the candidate"), _open(reference, threads, "the reference")
    check_same_layout(candidate_model.layout, reference_model.layout)
    paths = image_paths(data, images)
    # Every prediction NMS keeps is scored (COCO's 100 a class would cut a random-weight model's labels).
    scorer = TaskScorer(candidate_model.task, _kpt_count(candidate_model), max_dets=MAX_DET)
    for path in track(paths, "agreement"):
        truth = drop_degenerate(pseudo_labels(reference_model.predict(path, conf=conf, mask_scale=EVAL_MASK_SCALE), conf))
        scorer.add(drop_degenerate(candidate_model.predict(path, conf=EVAL_CONF, mask_scale=EVAL_MASK_SCALE)), truth)
    return scorer.result()


def evaluate_task(model: Any, data: DataSource, images: slice | str | None = None, *, threads: int = 0) -> TaskScore:
    """The task's measure of `model` against YOLO labels of `data` (a folder per class for classify)."""
    task_model = _open(model, threads, "the model")
    layout = task_model.layout
    if layout.task == "classify":
        paths = classify_image_paths(data, images)
        truths = [classify_labels(p, layout) for p in paths]  # read all first: a bad folder fails fast
    else:
        dataset = resolve_dataset(data, images)
        paths = list(dataset.image_paths)
        truths = [None] * len(paths)
    scorer = TaskScorer(layout.task, _kpt_count(task_model))
    for path, truth in zip(track(paths, "evaluate"), truths):
        found = task_model.predict(path, conf=EVAL_CONF, mask_scale=EVAL_MASK_SCALE)
        if truth is None:
            truth = read_task_labels(label_path_for(path), layout, found.image_shape, EVAL_MASK_SCALE)
        scorer.add(found, truth)
    return scorer.result()


def drop_degenerate(labels: Predictions) -> Predictions:
    """Drop predictions of zero area (boxes, rotated boxes, masks): nothing, not even the same box, overlaps
    them, so as labels they could never be found and as predictions they could never be right (random-weight
    models make many, often with saturated scores that tie with the real ones)."""
    if labels.task == "classify" or len(labels) == 0:
        return labels
    if labels.rotated is not None:
        keep = (labels.rotated[:, 2] > 0) & (labels.rotated[:, 3] > 0)
    else:
        keep = (labels.boxes[:, 2] > labels.boxes[:, 0]) & (labels.boxes[:, 3] > labels.boxes[:, 1])
    if labels.masks is not None:
        keep &= labels.masks.reshape(len(labels), -1).any(axis=1)
    return labels.select(keep)


def image_paths(data: DataSource, images: slice | str | None = None) -> list[Path]:
    """The sorted images of a dataset root, an image folder, a yaml or a list of paths, cut to `images`."""
    return list(resolve_dataset(data, images).image_paths)


def classify_image_paths(data: DataSource, images: slice | str | None = None) -> list[Path]:
    """The images of a classification folder (``root/<class>/*``, or ``root/val/<class>/*``), sorted."""
    if not isinstance(data, (str, Path)):
        return image_paths(data, images)
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"The classification dataset {root} is not a folder; pass a folder holding one folder per class.")
    if (root / "val").is_dir():
        root = root / "val"
    paths = sorted(p for p in root.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DataError(f"No images were found in class folders under {root}; a classification dataset holds "
                        "root/<class name>/*.jpg.")
    from yolograph.evaluation.dataset import dataset_from_image_paths

    return list(dataset_from_image_paths(paths, source=str(root)).subset(images).image_paths)


def _open(model: Any, threads: int, role: str) -> TaskModel:
    return model if isinstance(model, TaskModel) else TaskModel.open(model, threads=threads, name=_name(model, role))


def _name(model: Any, role: str) -> str:
    return f"{role} {model}" if isinstance(model, (str, Path)) else role


def _kpt_count(model: TaskModel) -> int | None:
    return model.layout.kpt_shape[0] if model.layout.kpt_shape else None


def predict_images(model: TaskModel, paths: Sequence[Path], conf: float) -> list[Predictions]:
    """Predictions of `model` on each image (kept in memory: for a few images, as `predict` writes them)."""
    return [model.predict(p, conf=conf) for p in track(paths, "predict")]
