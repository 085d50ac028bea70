"""distill: train the model's Conv weights to match a teacher's head on unlabeled, augmented images.

Restoration after a lossy pass (prune, or quantization): the teacher is the model as it was before the
first lossy pass (`teacher=PATH`, or the pipeline's input model when the pass context carries one), the
student is the model this pass gets. Both run as torch modules emitted from the IR
(`yolograph.training.emitter`); the loss compares the head's final convs, box distribution (DFL) and
class logits weighted like the task's loss, optionally the neck outputs too (`features=W`), on
Ultralytics-style augmented samples of the calibration images (mosaic, scale jitter, flips, HSV), so 32
images give many views (`yolograph.training`). Trained weights are written back into the initializers
they came from, by name; nothing is re-exported.

After insert-qdq + calibrate it is QAT-lite: Q/DQ nodes run as fake-quant with a straight-through
estimator, int8 weights train as float master copies and are rounded back against their fixed
per-channel scales; activation scales stay as calibrated (re-run `calibrate` before insert-qdq, i.e.
`prune,distill,insert-qdq,calibrate`, to quantize the distilled float model instead).

Preserves: the graph's structure, names, shapes and dtypes; only Conv weight and bias values change.
Changes accuracy on purpose (towards the teacher): the contract is an output SQNR floor against the
model before this pass (see DISTILL_SQNR_FLOOR_DB); the pass reports the head's SQNR against the teacher
before and after on its images, and the mAP it recovers is the budget measured by benchmarks/pruning.py
(benchmarks/README.md, "Pruning").

Needs PyTorch: `pip install 'yolograph[train]'`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from yolograph.errors import DataError, PipelineError
from yolograph.evaluation.calibration_data import CalibrationSource
from yolograph.ir.model import Model
from yolograph.pipeline.context import PassContext
from yolograph.pipeline.passes import Contract, Pass, PassResult, register_pass
from yolograph.pipeline.verify import confident_group_sqnr

# The verifier compares the distilled model with the model before distill (e.g. the pruned one) on
# uniform-noise images. Distillation moves the outputs towards the teacher, away from that model: on a
# 30%-pruned yolov8n the distilled outputs differ from the pruned ones by about as much as pruning moved
# them (prune's own floor is -20 dB for the same reason: noise-image class scores are near zero and carry
# no signal). The floor catches a training run that destroyed the model (NaNs, exploding weights).
DISTILL_SQNR_FLOOR_DB = -20.0

# Images the before/after SQNR against the teacher is reported on (the first N training images, plain
# letterbox, no augmentation).
_REPORT_IMAGES = 4


@dataclass(frozen=True)
class DistillOptions(CalibrationSource):
    """images= (dataset root, image folder or yaml; count= or range=A:B) or npy=, the training images."""

    teacher: str | None = None  # the teacher model (.onnx); default: the pipeline's input model
    epochs: float = 10.0  # passes over the images (one step = one batch of augmented samples)
    steps: int = 0  # or exactly this many steps (overrides epochs)
    minutes: float = 0.0  # stop after this long (0: no limit); the learning-rate schedule then runs on time
    batch: int = 8
    # AdamW peak rate. yolov8n 30% (quick prune, 18.7 mAP50-95), 5 loaded-CPU minutes: 3e-4 (7 steps) 8.0,
    # 3e-5 (36 steps) 16.8: few Adam steps move every weight by ~lr, so small rates (benchmarks/README.md)
    lr: float = 3e-5
    seed: int | None = None  # None: the pipeline's seed
    imgsz: int = 0  # training size (0: the model's input size; the head taps make any multiple of 32 work)
    features: float = 0.0  # weight of the neck-output terms (0: head outputs only)
    layers: Literal["all", "pruned"] = "all"  # pruned: only convs whose shape differs from the teacher's
    augment: bool = True  # Ultralytics-style mosaic, scale jitter, flips, HSV
    threads: int = 0  # torch threads (0: the pipeline's thread count)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 0 or self.steps < 0 or self.minutes < 0:
            raise ValueError("epochs, steps and minutes must not be negative")
        if not (self.epochs or self.steps or self.minutes):
            raise ValueError("distill needs a budget: epochs=N, steps=N or minutes=M")
        if self.batch < 1:
            raise ValueError(f"batch={self.batch} is not positive; use e.g. batch=8")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} is not positive; use e.g. lr=1e-4")
        if self.imgsz < 0 or self.imgsz % 32:
            raise ValueError(f"imgsz={self.imgsz} is not a multiple of 32; use e.g. imgsz=640 (or 0: the model's)")
        if self.features < 0:
            raise ValueError(f"features={self.features} is negative; use 0 (off) or a positive weight")


@register_pass("distill")
class Distill(Pass):
    """Knowledge distillation from the unpruned/float teacher on unlabeled augmented images (PyTorch)."""

    Options = DistillOptions
    contract = Contract.sqnr(DISTILL_SQNR_FLOOR_DB, note="vs the model before distill: gross-breakage floor; the "
                                                        "head's SQNR vs the teacher is reported, the mAP recovered "
                                                        "is measured by benchmarks/pruning.py")

    def validate(self) -> None:
        self.options.require("distill")
        if self.options.teacher is not None:
            from pathlib import Path

            if not Path(self.options.teacher).is_file():
                raise DataError(f"The distill teacher {self.options.teacher} does not exist; give teacher=PATH "
                                "of the model before pruning/quantization (.onnx).")

    def run(self, model: Model) -> PassResult:
        from yolograph.training import require_torch

        require_torch("distill")
        from yolograph.training.augment import Augmentation
        from yolograph.training.loop import (
            TrainConfig,
            distill_model,
            trainable_where_shapes_changed,
        )

        options, context = self.options, PassContext.current()
        teacher = _teacher(options, context)
        _check_compatible(model, teacher)
        images = _training_images(options, tuple(model.inputs[0].shape[2:4]))
        before = _teacher_sqnr(model, teacher, images, context)
        config = TrainConfig(
            epochs=options.epochs, steps=options.steps, minutes=options.minutes, batch=options.batch, lr=options.lr,
            seed=context.seed if options.seed is None else options.seed,
            threads=options.threads or context.threads,
            imgsz=(options.imgsz, options.imgsz) if options.imgsz else None,
            feature_weight=options.features,
            augmentation=Augmentation() if options.augment else Augmentation.none(),
            trainable=trainable_where_shapes_changed(model, teacher) if options.layers == "pruned" else None,
        )
        result = distill_model(model, teacher, images, config, progress=context.track)
        after = _teacher_sqnr(model, teacher, images, context)
        return PassResult(changed=result.steps > 0, stats={
            "steps": result.steps,
            "images": len(images),
            "samples_seen": result.images_seen,
            "train_seconds": round(result.seconds, 1),
            "trained_tensors": result.parameters,
            "loss_first": round(result.first_loss, 5),
            "loss_last": round(result.last_loss, 5),
            "loss_terms_last": {k: round(v, 5) for k, v in result.history[-1].items()} if result.history else {},
            "teacher_sqnr_db_before": before,
            "teacher_sqnr_db_after": after,
            "quantized": any(n.op == "QuantizeLinear" for n in model.graph.nodes),
        })


def _teacher(options: DistillOptions, context: PassContext) -> Model:
    """The teacher: teacher=PATH, else the model the pipeline started from (when the context keeps it)."""
    if options.teacher is not None:
        from yolograph.frontends import load_model

        return load_model(options.teacher)
    if context.input_model is None:
        raise PipelineError("distill needs a teacher: give teacher=PATH (the model before prune/quantization, "
                            ".onnx), or run it inside a pipeline, whose input model is the default teacher.")
    return context.input_model


def _check_compatible(model: Model, teacher: Model) -> None:
    if [t.shape for t in model.inputs] != [t.shape for t in teacher.inputs]:
        raise DataError(f"The distill teacher's input {teacher.inputs[0].shape} differs from the model's "
                        f"{model.inputs[0].shape}; give the teacher exported at the same size.")
    if model.facts.task != teacher.facts.task:
        raise DataError(f"The distill teacher is a {teacher.facts.task} model and this one a {model.facts.task} "
                        "model; give the model this one was made from.")


def _training_images(options: DistillOptions, imgsz: tuple[int, int]) -> list[np.ndarray]:
    """The training images as BGR uint8 arrays (npy tensors are turned back into 8-bit images)."""
    if options.npy is not None:
        tensors = list(options.source().tensors(imgsz))
        return [np.ascontiguousarray((np.clip(t[0], 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)[:, :, ::-1])
                for t in tensors]
    from yolograph.evaluation import resolve_dataset
    from yolograph.evaluation.preprocess import read_image

    paths = list(resolve_dataset(str(options.images), options.range or None).image_paths)[: options.count]
    if not paths:
        raise DataError(f"distill found no images in {options.images}; give images=DIR with image files.")
    return [read_image(path) for path in paths]


def _teacher_sqnr(model: Model, teacher: Model, images: list[np.ndarray], context: PassContext) -> dict[str, float]:
    """Per output group SQNR (dB, confident anchors) of `model` against `teacher` on the first images."""
    from yolograph.training.augment import plain_sample

    imgsz = tuple(model.inputs[0].shape[2:4])
    name, teacher_name = model.inputs[0].name, teacher.inputs[0].name
    student_runner, teacher_runner = context.runner(model), context.runner(teacher)
    feeds = [plain_sample(image, imgsz)[None] for image in images[:_REPORT_IMAGES]]
    reference = [teacher_runner.run({teacher_name: x}) for x in feeds]
    candidate = [student_runner.run({name: x}) for x in feeds]
    return {k: round(v, 2) for k, v in confident_group_sqnr(model, reference, candidate).items()}
