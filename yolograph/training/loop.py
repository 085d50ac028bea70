"""The distillation loop: teacher and student as torch modules, AdamW with warmup + cosine decay, by steps or minutes.

`distill_model(student, teacher, images, config)` trains the student's Conv weights and biases in place
(written back into its initializers by name) to match the teacher's head on augmented unlabeled images.

Determinism: torch, numpy and the sampling all draw from `config.seed`; with a step or epoch budget the
same seed and the same `threads` give the same weights (torch's CPU kernels are deterministic for a
fixed thread count; `threads=1` also makes the result independent of the machine's core count). A
`minutes` budget stops after however many steps fit, so the step count, and hence the result, depends on
the machine's speed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs
import torch

from yolograph.ir.model import Model
from yolograph.training.augment import Augmentation, augmented_sample
from yolograph.training.emitter import GraphModule
from yolograph.training.losses import DistillTargets, distill_loss, distill_targets


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 10.0  # passes over the images (a step is one batch)
    steps: int = 0  # or exactly this many steps (overrides epochs)
    minutes: float = 0.0  # stop after this long (0: no time limit); the schedule then runs on time
    batch: int = 8
    lr: float = 3e-5  # see DistillOptions.lr
    weight_decay: float = 0.0
    warmup: float = 0.05  # fraction of the budget with a linear learning-rate warmup
    seed: int = 0
    threads: int = 0  # torch intra-op threads (0: leave torch's setting)
    imgsz: tuple[int, int] | None = None  # training size (None: the model's input size)
    feature_weight: float = 0.0
    augmentation: Augmentation = field(default_factory=Augmentation)
    trainable: Callable[[gs.Node], bool] | None = None  # which convs train (None: all)


@dataclass
class TrainResult:
    steps: int
    images_seen: int
    seconds: float
    parameters: int  # trained tensors written back
    history: list[dict[str, float]]  # per step: loss and its terms

    @property
    def first_loss(self) -> float:
        return self.history[0]["loss"] if self.history else float("nan")

    @property
    def last_loss(self) -> float:
        """Mean loss over the last tenth of the steps (one step is noisy)."""
        tail = self.history[-max(1, len(self.history) // 10):]
        return float(np.mean([h["loss"] for h in tail])) if tail else float("nan")


class _LossLabel:
    """A progress label that formats as the current loss (yolograph.progress formats its label per line)."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.loss = prefix, float("nan")

    def __format__(self, spec: str) -> str:
        return f"{self.prefix} (loss {self.loss:.4f})"


def distill_model(student: Model, teacher: Model, images: list[np.ndarray], config: TrainConfig,
                  progress: Callable | None = None) -> TrainResult:
    """Train `student` towards `teacher` on augmented `images` (BGR uint8); writes the weights back."""
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(student, teacher, images, config, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _train(student: Model, teacher: Model, images, config: TrainConfig, progress) -> TrainResult:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    targets = distill_targets(student, teacher, config.feature_weight)
    student_module = GraphModule(student, outputs=targets.student_tensors, trainable=config.trainable)
    teacher_module = GraphModule(teacher, outputs=targets.teacher_tensors).eval()
    for param in teacher_module.parameters():
        param.requires_grad_(False)
    imgsz = config.imgsz or tuple(student.inputs[0].shape[2:4])
    batch = min(config.batch, max(1, len(images)))
    total_steps = config.steps or (math.ceil(config.epochs * len(images) / batch) if config.epochs else 0)
    if not total_steps and not config.minutes:
        raise ValueError("a training budget is needed: steps, epochs or minutes")
    optimizer = torch.optim.AdamW(student_module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    label = _LossLabel("distill")
    steps = _step_counter(total_steps)
    iterator = progress(steps, label, total_steps or None) if progress else steps
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for step in iterator:
        fraction = _fraction(step, total_steps, time.perf_counter() - start, config.minutes)
        if fraction >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _schedule(fraction, config.warmup)
        sample = torch.from_numpy(np.stack([augmented_sample(images, imgsz, rng, config.augmentation)
                                            for _ in range(batch)]))
        with torch.no_grad():
            teacher_taps = teacher_module(sample)
        loss, terms = distill_loss(targets, student_module(sample), teacher_taps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        label.loss = float(loss.detach())
        history.append({"loss": label.loss, **terms})
    seconds = time.perf_counter() - start
    written = student_module.write_back(student)
    student.invalidate()
    return TrainResult(len(history), len(history) * batch, seconds, written, history)


def _step_counter(total: int):
    step = 0
    while not total or step < total:
        yield step
        step += 1
    yield step  # one past the end: the loop sees fraction 1.0 and stops


def _fraction(step: int, total_steps: int, elapsed: float, minutes: float) -> float:
    """How far through the budget (0..1): the tighter of the step and the time budget."""
    by_steps = step / total_steps if total_steps else 0.0
    by_time = elapsed / (60.0 * minutes) if minutes else 0.0
    return max(by_steps, by_time)


def _schedule(fraction: float, warmup: float) -> float:
    """Learning-rate factor: linear warmup, then cosine decay to 1% of the peak."""
    if warmup > 0 and fraction < warmup:
        return (fraction + 1e-3) / warmup
    progress = (fraction - warmup) / max(1e-9, 1.0 - warmup)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def trainable_where_shapes_changed(student: Model, teacher: Model) -> Callable[[gs.Node], bool]:
    """Only the convs whose weight shape differs from the teacher's conv of the same name (what pruning cut)."""
    teacher_shapes = {n.name: tuple(n.inputs[1].shape or ()) for n in teacher.graph.nodes if n.op == "Conv"}

    def changed(node: gs.Node) -> bool:
        return teacher_shapes.get(node.name) != tuple(node.inputs[1].shape or ())

    return changed


def evaluation_targets(student: Model, teacher: Model) -> DistillTargets:
    """The head taps alone (no features): what the pass reports its loss on before and after."""
    return distill_targets(student, teacher, 0.0)


def loss_on_samples(student: Model, teacher: Model, samples: np.ndarray, feature_weight: float = 0.0) -> float:
    """The distillation loss of `student` on fixed `[N,3,H,W]` samples (no augmentation, no training)."""
    targets = distill_targets(student, teacher, feature_weight)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        s = GraphModule(student, outputs=targets.student_tensors)(x)
        t = GraphModule(teacher, outputs=targets.teacher_tensors)(x)
        return float(distill_loss(targets, s, t)[0])
