"""A model of any YOLO task ready to predict images: a runner, its input size and its `TaskLayout`.

`TaskModel.open` takes what the CLI takes (an .onnx / .pt path, a built-in name, a compiled backend
artifact), a loaded `Model` or any `Runner`, so `eval`, `predict` and the Python API run the same code
on ONNX Runtime and on every backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from yolograph.errors import ModelError
from yolograph.evaluation.predictions import Predictions, decode, prepare_image
from yolograph.evaluation.tasks import TaskLayout, layout_from_outputs
from yolograph.ir.model import Model
from yolograph.layout.io import input_from_nchw


@dataclass
class TaskModel:
    runner: Any  # a yolograph.runtime.backend.Runner
    imgsz: tuple[int, int]
    layout: TaskLayout
    source: str = "the model"

    @staticmethod
    def open(model: Model | str | os.PathLike[str] | Any | None, *, backend: str | None = None,
             threads: int = 0, name: str | None = None) -> TaskModel:
        """Open a model path / built-in name / artifact, wrap a Model, or take a ready runner."""
        from yolograph.runtime import OrtOptions, OrtRunner
        from yolograph.runtime.backend import open_runner

        facts_task = None
        if isinstance(model, Model):
            runner = OrtRunner(model, OrtOptions(threads=threads))
            facts_task = model.facts.task
            imgsz = tuple(runner.imgsz)
        elif model is None or isinstance(model, (str, os.PathLike)):
            runner, imgsz = open_runner(None if model is None else str(model), backend=backend, threads=threads)
        else:
            runner, imgsz = model, tuple(getattr(model, "imgsz", None) or (640, 640))
        source = name or (f"the model {model}" if isinstance(model, (str, os.PathLike)) else "the model")
        metadata: Mapping[str, str] = getattr(runner, "metadata", None) or {}
        probe = np.full((1, 3, *imgsz), 114 / 255, dtype=np.float32)
        try:
            outputs = run_outputs(runner, probe)
        except ModelError:
            raise
        except Exception as exc:  # a backend's own failure on a well-formed input
            raise ModelError(f"{source} cannot run on a {list(probe.shape)} image tensor ({exc}).") from exc
        layout = layout_from_outputs(metadata, [o.shape for o in outputs], facts_task, source)
        return TaskModel(runner, (int(imgsz[0]), int(imgsz[1])), layout, source)

    @property
    def task(self) -> str:
        return self.layout.task

    def predict(self, image: np.ndarray | str | os.PathLike[str], conf: float = 0.25, iou: float = 0.7,
                max_det: int = 300, mask_scale: float = 1.0) -> Predictions:
        """Predictions on one image (a path or an HxWx3 BGR array) in its own pixels."""
        tensor, geometry = prepare_image(image, self.task, self.imgsz)
        outputs = run_outputs(self.runner, tensor)
        return decode(outputs, geometry, self.layout, conf=conf, iou=iou, max_det=max_det, mask_scale=mask_scale)


def run_outputs(runner: Any, tensor: np.ndarray) -> list[np.ndarray]:
    """Every output of `runner` for an NCHW float RGB [0, 1] tensor, fed as the model takes it.

    Runners with metadata (ONNX Runtime, TVM) take it through `run` with the input converted by their
    input layout (to-nhwc models); others give only `predict`'s first output.
    """
    metadata = getattr(runner, "metadata", None)
    if metadata is not None and hasattr(runner, "run"):
        return [np.asarray(o) for o in runner.run(input_from_nchw(metadata, tensor))]
    return [np.asarray(runner.predict(tensor))]
