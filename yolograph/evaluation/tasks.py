"""Which YOLO task a model solves and how its raw outputs are laid out, read from metadata and output shapes.

Ultralytics exports write ``task``, ``names`` and (pose) ``kpt_shape`` into the ONNX metadata; the raw
outputs are then, per anchor (``A`` anchors):

* detect   ``[1, 4 + nc, A]``: ``cx, cy, w, h`` (input pixels), ``nc`` class scores;
* segment  ``[1, 4 + nc + nm, A]`` and prototypes ``[1, nm, mh, mw]``: ``nm`` mask coefficients;
* pose     ``[1, 4 + nc + K * D, A]``: ``K`` keypoints of ``D`` values (``x, y`` in input pixels, visibility);
* obb      ``[1, 4 + nc + 1, A]``: the angle (radians) last;
* classify ``[1, nc]``: class probabilities.

The class count comes from ``names`` where the metadata has them, else from the layout (never by
guessing a head's extra rows). A model without a ``task`` entry is read as detect or segment when its
outputs can only be that (the built-in builder writes no metadata); anything else is a ModelError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from yolograph.errors import ModelError
from yolograph.ir.metadata import parse_kpt_shape, parse_names

TASKS = ("detect", "segment", "pose", "obb", "classify")


@dataclass(frozen=True)
class TaskLayout:
    """What decoding a model's outputs needs: its task, classes and the sizes of the task's extra rows."""

    task: str
    num_classes: int
    names: dict[int, str] = field(default_factory=dict)
    kpt_shape: tuple[int, int] | None = None  # (keypoints, values per keypoint), pose only
    num_masks: int = 0  # mask coefficients per anchor, segment only

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelError(f"The task {self.task!r} is not one yolograph decodes; supported: {', '.join(TASKS)}.")
        if self.num_classes < 1:
            raise ModelError(f"The {self.task} model has {self.num_classes} classes; a YOLO head has at least one.")

    def name(self, cls: int) -> str:
        return self.names.get(int(cls), str(int(cls)))

    def describe(self) -> str:
        extra = f", {self.kpt_shape[0]} keypoints" if self.kpt_shape else ""
        return f"{self.task} with {self.num_classes} classes{extra}"


def layout_from_outputs(metadata: Mapping[str, str], output_shapes: Sequence[Sequence[int]],
                        facts_task: str | None = None, source: str = "the model") -> TaskLayout:
    """The TaskLayout of a model from its metadata (``task``, ``names``, ``kpt_shape``) and output shapes."""
    shapes = [tuple(int(d) for d in s) for s in output_shapes]
    if not shapes:
        raise ModelError(f"{source} has no outputs; export the YOLO model with its head.")
    task = metadata.get("task") or facts_task or _task_from_shapes(shapes, source)
    if task not in TASKS:
        raise ModelError(f"{source} says its task is {task!r}, which yolograph cannot decode; "
                         f"use a model of one of: {', '.join(TASKS)}.")
    if str(metadata.get("end2end", "")).lower() == "true":
        raise ModelError(f"{source} is an end-to-end export (NMS inside the model, outputs {[list(s) for s in shapes]}); "
                         "yolograph decodes raw head outputs: export it with end2end=False.")
    names = parse_names(metadata.get("names"))
    first = shapes[0]
    if task == "classify":
        if len(first) != 2 or first[0] != 1:
            raise _shape_error(source, task, first, "[1, classes]")
        return TaskLayout(task, _class_count(names, first[1], source), names)
    if len(first) != 3 or first[0] != 1 or first[1] < 5:
        raise _shape_error(source, task, first, "[1, 4 + classes + extra rows, anchors]")
    rows = first[1] - 4
    if task == "detect":
        return TaskLayout(task, _class_count(names, rows, source), names)
    if task == "obb":
        return TaskLayout(task, _class_count(names, rows - 1, source), names)
    if task == "segment":
        if len(shapes) < 2 or len(shapes[1]) != 4:
            raise ModelError(f"{source} is a segment model without a [1, masks, h, w] prototype output; "
                             "export it with both outputs (output0 and output1).")
        num_masks = shapes[1][1]
        return TaskLayout(task, _class_count(names, rows - num_masks, source), names, num_masks=num_masks)
    kpt_shape = parse_kpt_shape(metadata.get("kpt_shape"))
    if kpt_shape is None:
        raise ModelError(f"{source} is a pose model without a kpt_shape metadata entry (e.g. [17, 3]); "
                         "export it with Ultralytics, which writes it.")
    return TaskLayout(task, _class_count(names, rows - kpt_shape[0] * kpt_shape[1], source), names,
                      kpt_shape=kpt_shape)


def check_same_layout(candidate: TaskLayout, reference: TaskLayout) -> None:
    """A candidate is scored against a reference of the same task, class count and keypoints only."""
    if candidate.task != reference.task:
        raise ModelError(f"The reference is {_a(reference.task)} model but the candidate is {_a(candidate.task)} model; "
                         "compare two models of the same task.")
    if candidate.num_classes != reference.num_classes:
        raise ModelError(f"The reference has {reference.num_classes} classes but the candidate "
                         f"{candidate.num_classes}; compare two models of the same class count.")
    if candidate.kpt_shape != reference.kpt_shape:
        raise ModelError(f"The reference has keypoints {reference.kpt_shape} but the candidate "
                         f"{candidate.kpt_shape}; compare two models of the same keypoint layout.")


def _task_from_shapes(shapes: list[tuple[int, ...]], source: str) -> str:
    first = shapes[0]
    if len(shapes) == 1 and len(first) == 3 and first[0] == 1 and first[1] > 4:
        return "detect"
    if len(shapes) == 2 and len(first) == 3 and len(shapes[1]) == 4 and first[1] > 4 + shapes[1][1]:
        return "segment"
    raise ModelError(f"The task of {source} cannot be read: it has no 'task' metadata and outputs "
                     f"{[list(s) for s in shapes]} fit no single task; use an Ultralytics export, which "
                     "writes the task into the model's metadata.")


def _class_count(names: dict[int, str], rows: int, source: str) -> int:
    if names:
        if len(names) != rows:
            raise ModelError(f"{source} names {len(names)} classes in its metadata but its output has "
                             f"{rows} class rows; fix the 'names' metadata or re-export the model.")
        return len(names)
    return rows


def _shape_error(source: str, task: str, shape: tuple[int, ...], expected: str) -> ModelError:
    return ModelError(f"{source} is a {task} model but its first output has shape {list(shape)}, not "
                      f"{expected}; pass the raw export (no NMS or end-to-end head inside the model).")


def _a(task: str) -> str:
    return f"an {task}" if task[0] in "aeiou" else f"a {task}"
