"""Distillation losses on a YOLO head: what the student's final head convs should say, given the teacher's.

The taps are the outputs of the head's final convs (`YoloFacts.branches`), before the decode, so the
loss sees the logits the task's own loss trains: the box distribution (DFL bins, reg_max per side) and
the class logits. Weighted like Ultralytics' detection loss (box 7.5, cls 0.5, dfl 1.5), with the teacher
in the place of the assigned labels:

- cls: binary cross-entropy of the student's logits against the teacher's sigmoid scores, minus the
  teacher's own entropy (so a perfect student scores 0), summed and divided by the sum of the anchor
  weights (Ultralytics divides by the target-score sum);
- dfl: KL divergence of the student's per-side bin distribution from the teacher's, at each anchor
  weighted by the teacher's best class score (the labels' assigned score in Ultralytics);
- box: L1 between the expected distances of both distributions (in bins), same anchor weights.

Other branches (mask coefficients, keypoints, angle, prototypes, a classifier, boxes without DFL) and
outputs no branch describes are matched by mean squared error relative to the teacher's mean square.
Optional feature terms compare the neck outputs (the tensors the head reads) where the student's shape
equals the teacher's (a pruned neck tensor has fewer channels and is skipped), the same relative MSE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from yolograph.ir.model import Model

BOX_GAIN, CLS_GAIN, DFL_GAIN = 7.5, 0.5, 1.5


@dataclass(frozen=True)
class Tap:
    """One tensor compared between student and teacher, and how."""

    student: str
    teacher: str
    kind: str  # "dfl" | "class" | "mse" | "feature"
    level: int = 0  # scale index of head taps (pairs a box tap with the class tap at the same scale)


@dataclass(frozen=True)
class DistillTargets:
    taps: tuple[Tap, ...]
    reg_max: int
    feature_weight: float = 0.0
    skipped_features: tuple[str, ...] = field(default=())

    @property
    def student_tensors(self) -> list[str]:
        return [t.student for t in self.taps]

    @property
    def teacher_tensors(self) -> list[str]:
        return [t.teacher for t in self.taps]


def distill_targets(student: Model, teacher: Model, feature_weight: float = 0.0) -> DistillTargets:
    """Pair the head taps of `student` and `teacher` (by branch role and scale) and the neck features."""
    s_facts, t_facts = student.facts, teacher.facts
    s_out = {n.name: n.outputs[0].name for n in student.graph.nodes}
    t_out = {n.name: n.outputs[0].name for n in teacher.graph.nodes}
    taps: list[Tap] = []
    for branch in s_facts.branches:
        partner = t_facts.branch(branch.role)
        if partner is None or len(partner.nodes) != len(branch.nodes):
            continue
        kind = {"box": "dfl" if (s_facts.reg_max or 1) > 1 else "mse", "class": "class"}.get(branch.role, "mse")
        for level, (s_node, t_node) in enumerate(zip(branch.nodes, partner.nodes)):
            taps.append(Tap(s_out[s_node], t_out[t_node], kind, level))
    if not taps:  # nothing the facts describe: match the model outputs themselves
        taps = [Tap(s.name, t.name, "mse") for s, t in zip(student.graph.outputs, teacher.graph.outputs)]
    skipped: list[str] = []
    if feature_weight > 0:
        for name in neck_outputs(student):
            same = teacher.shape_of(name) is not None and teacher.shape_of(name) == student.shape_of(name)
            if same:
                taps.append(Tap(name, name, "feature"))
            else:
                skipped.append(name)
    return DistillTargets(tuple(taps), max(1, int(s_facts.reg_max or 1)), feature_weight, tuple(skipped))


def neck_outputs(model: Model) -> list[str]:
    """Tensors the head reads from outside it (the neck's outputs), in graph order."""
    head = model.facts.head_nodes
    producers = {t.name: n for n in model.graph.nodes for t in n.outputs}
    names: list[str] = []
    for node in model.graph.nodes:
        if node.name not in head:
            continue
        for tensor in node.inputs:
            parent = producers.get(tensor.name)
            if parent is not None and parent.name not in head and parent.op != "Constant" and tensor.name not in names:
                names.append(tensor.name)
    return names


def distill_loss(targets: DistillTargets, student: list[torch.Tensor], teacher: list[torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss and its terms (floats) for one batch of tap values (in `targets.taps` order)."""
    terms: dict[str, torch.Tensor] = {}
    weights = _anchor_weights(targets, teacher)
    # one normalizer for every scale, like Ultralytics' target-score sum over all anchors
    norm = torch.clamp(sum(w.sum() for w in weights.values()), min=1.0) if weights else None
    for tap, s, t in zip(targets.taps, student, teacher):
        if tap.kind == "dfl":
            box, dfl = _dfl_terms(s, t, targets.reg_max, weights.get(tap.level), norm)
            _add(terms, "box", BOX_GAIN * box)
            _add(terms, "dfl", DFL_GAIN * dfl)
        elif tap.kind == "class":
            _add(terms, "cls", CLS_GAIN * _class_term(s, t, norm))
        elif tap.kind == "feature":
            _add(terms, "feature", targets.feature_weight * _relative_mse(s, t))
        else:
            _add(terms, "mse", _relative_mse(s, t))
    total = sum(terms.values())
    return total, {name: float(value.detach()) for name, value in terms.items()}


def _add(terms: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    terms[name] = terms[name] + value if name in terms else value


def _anchor_weights(targets: DistillTargets, teacher: list[torch.Tensor]) -> dict[int, torch.Tensor]:
    """Per scale: the teacher's best class score at each anchor, [B, H, W] (what the box terms weigh by)."""
    weights = {}
    for tap, t in zip(targets.taps, teacher):
        if tap.kind == "class":
            weights[tap.level] = torch.sigmoid(t).amax(dim=1).detach()
    return weights


def _dfl_terms(s: torch.Tensor, t: torch.Tensor, reg_max: int, weight: torch.Tensor | None,
               norm: torch.Tensor | None):
    batch, _, height, width = s.shape
    s = s.reshape(batch, 4, reg_max, height, width)
    t = t.reshape(batch, 4, reg_max, height, width)
    log_s = F.log_softmax(s, dim=2)
    p_t = F.softmax(t, dim=2)
    kl = (p_t * (torch.log(p_t.clamp_min(1e-12)) - log_s)).sum(dim=2).mean(dim=1)  # [B, H, W]
    bins = torch.arange(reg_max, dtype=s.dtype).reshape(1, 1, reg_max, 1, 1)
    l1 = ((log_s.exp() * bins).sum(dim=2) - (p_t * bins).sum(dim=2)).abs().mean(dim=1)
    if weight is None:
        weight = torch.ones_like(kl)
    norm = norm if norm is not None else torch.tensor(float(kl.numel()))
    return (l1 * weight).sum() / norm, (kl * weight).sum() / norm


def _class_term(s: torch.Tensor, t: torch.Tensor, norm: torch.Tensor | None) -> torch.Tensor:
    p_t = torch.sigmoid(t)
    bce = F.binary_cross_entropy_with_logits(s, p_t, reduction="sum")
    entropy = F.binary_cross_entropy_with_logits(t, p_t, reduction="sum")
    norm = norm if norm is not None else torch.tensor(float(s.numel()))
    return (bce - entropy) / norm


def _relative_mse(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(s, t) / t.square().mean().clamp_min(1e-12)
