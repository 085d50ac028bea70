"""Checking a pass's contract against ONNX Runtime.

The verifier runs the model before and after a pass on the same inputs (seeded random images in
[0,1) plus any the user gives) and applies the pass's Contract to the output groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from yolograph.errors import DataError
from yolograph.ir.model import Model
from yolograph.runtime.ort import OrtRunner

Feed = dict[str, np.ndarray]


def verification_inputs(model: Model, given: Sequence[Feed] = (), random_count: int = 2, seed: int = 0) -> list[Feed]:
    """Seeded random inputs for every graph input, followed by the given ones (shape-checked)."""
    rng = np.random.default_rng(seed)
    feeds = [
        {t.name: _random_like(rng, t.shape, t.dtype) for t in model.inputs} for _ in range(random_count)
    ]
    for feed in given:
        for info in model.inputs:
            if info.name not in feed:
                raise DataError(f"Verification input lacks {info.name!r}; it must provide every model input.")
            if tuple(feed[info.name].shape) != info.shape:
                raise DataError(
                    f"Verification input {info.name!r} has shape {tuple(feed[info.name].shape)}, "
                    f"the model needs {info.shape}."
                )
        feeds.append(feed)
    return feeds


def _random_like(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 256, size=shape).astype(dtype)
    return rng.random(shape, dtype=np.float32).astype(dtype)


def output_groups(model: Model, outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Split outputs into groups judged separately: the task's output groups (box rows, score rows, mask
    coefficients, prototypes, keypoint x/y and visibility, angle, class probabilities); an output the
    facts do not describe is one group. An angle group is judged as its orientation (cos 2θ, sin 2θ),
    since a rotated box turned by π is the same box (see OutputGroup.judged)."""
    return [array for _, array in labelled_output_groups(model, outputs)]


def labelled_output_groups(model: Model, outputs: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """`output_groups` with each group's label ("output0:box", "output1:prototypes", ...)."""
    groups: list[tuple[str, np.ndarray]] = []
    for info, array in zip(model.outputs, outputs):
        described = [g for g in model.facts.groups_of(info.name) if _fits(g, array)]
        if described:
            groups += [(g.label, g.judged(array)) for g in described]
        else:
            groups.append((info.name, array))
    return groups


def group_labels(model: Model) -> list[str]:
    """Labels of `output_groups(model, ...)`, in order."""
    labels: list[str] = []
    for info in model.outputs:
        described = model.facts.groups_of(info.name)
        labels += [g.label for g in described] if described else [info.name]
    return labels


def _fits(group, array: np.ndarray) -> bool:
    return group.rows is None or (array.ndim > group.axis and max(group.rows) < array.shape[group.axis])


def run_groups(model: Model, feeds: Sequence[Feed]) -> list[np.ndarray]:
    """Output groups of `model` over all feeds, concatenated per group."""

    runner = OrtRunner(model)
    per_feed = [output_groups(model, runner.run(feed)) for feed in feeds]
    return [np.stack([groups[i] for groups in per_feed]) for i in range(len(per_feed[0]))]


def confident_group_sqnr(model: Model, reference: Sequence[list[np.ndarray]], candidate: Sequence[list[np.ndarray]],
                         min_score: float = 0.05) -> dict[str, float]:
    """SQNR (dB) of each output group of `candidate` against `reference` (per-input output lists).

    Anchor-wise groups (box, scores, mask coefficients, keypoints, angle) are measured only on the
    anchors where the reference's best score is >= `min_score`: what a user keeps after thresholding;
    the thousands of background anchors would otherwise dominate the error. Where no anchor reaches it,
    all anchors count.
    """
    from yolograph.pipeline.passes import sqnr_db

    results: dict[str, float] = {}
    for position, info in enumerate(model.outputs):
        groups = model.facts.groups_of(info.name)
        scores = next((g for g in groups if g.role == "scores"), None)
        ref_all = np.concatenate([outs[position] for outs in reference])
        new_all = np.concatenate([outs[position] for outs in candidate])
        confident = None
        if scores is not None and ref_all.ndim == 3:
            confident = scores.take(ref_all).max(axis=1) >= min_score  # [images, anchors]
            if not confident.any():
                confident = None
        for group in groups or ():
            ref, new = group.judged(ref_all), group.judged(new_all)
            if group.anchor_wise and confident is not None:
                ref = np.moveaxis(ref, -1, 1)[confident]  # [confident anchors, rows]
                new = np.moveaxis(new, -1, 1)[confident]
            results[group.label] = sqnr_db(ref, new)
        if not groups:
            results[info.name] = sqnr_db(ref_all, new_all)
    return results
