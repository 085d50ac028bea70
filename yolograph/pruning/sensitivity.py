"""End-to-end sensitivity: how much a group's pruning distorts the model's outputs, measured.

The error model predicts each group's error relative to its consumers' own outputs, so it cannot tell
an early backbone layer (whose error every later layer inherits) from a late one. `group_sensitivity`
prunes a quarter of each candidate group in turn (with local reconstruction), runs the model on a few
calibration images and returns measured distortion / predicted error per group: the factor that puts
every group's prediction on the scale of the model's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from yolograph.analysis.channel_groups import ChannelAnalysis
from yolograph.ir.heads import OutputGroup
from yolograph.ir.model import Model
from yolograph.progress import track
from yolograph.pruning.error_model import ErrorGreedy
from yolograph.pruning.reconstruction import Refit
from yolograph.pruning.selection import allowed_removal
from yolograph.pruning.surgery import remove_classes
from yolograph.runtime import PASS_THREADS, OrtOptions, OrtRunner


def group_sensitivity(model: Model, analysis: ChannelAnalysis, greedy: ErrorGreedy, refit: Refit,
                      images: Sequence[np.ndarray], threads: int = PASS_THREADS,
                      fraction: float = 0.25) -> dict[int, float]:
    """Per candidate group: measured output distortion / predicted layer error when `fraction` of it is
    pruned (refit by `refit`), normalised so the median group is 1; empty when the outputs give nothing
    to measure (then the error model's prediction alone ranks the groups).

    Distortion has one term per output group (`distortion_terms`: a detect output's boxes and class
    scores, a segment model's mask coefficients and prototypes, ...); each term is divided by its median over the groups, so every part counts alike whatever
    its units.
    """
    reference = OrtRunner(model, OrtOptions(threads=threads))
    expected = [reference.run(image) for image in images]
    groups = [model.facts.groups_of(name) for name in reference.output_names]
    terms: dict[int, np.ndarray] = {}
    predictions: dict[int, float] = {}
    rules = greedy.rules
    for group in track(greedy.candidates, "prune: group sensitivity"):
        count = allowed_removal(group, max(rules.round_to, int(round(fraction * group.size))), rules)
        if count == 0:
            continue
        predictions[group.id], chunk = greedy.chunk(group.id, list(group.classes), count)
        trial = model.copy()
        remove_classes(trial, analysis, set(chunk), refit)
        runner = OrtRunner(trial, OrtOptions(threads=threads))
        terms[group.id] = np.mean([distortion_terms(ref, runner.run(image), groups)
                                   for ref, image in zip(expected, images)], axis=0)
    if not terms:
        return {}
    stacked = np.stack(list(terms.values()))
    if not np.all(np.isfinite(stacked)):
        return {}  # the model's own outputs overflow: nothing to measure; the prediction alone decides
    scales = np.maximum(np.median(stacked, axis=0), 1e-30)
    ratios = {gid: float(np.sum(value / scales)) / max(predictions[gid], 1e-9) for gid, value in terms.items()}
    scale = float(np.median(list(ratios.values())))
    if scale <= 0:
        return {}  # most groups' pruning changed no output measurably: no scale to put predictions on
    return {gid: value / scale for gid, value in ratios.items()}


# Anchors whose best reference class score is below this hold no detection that mAP would count.
CONFIDENT_SCORE = 0.05
# Where no anchor is confident (random or untrained weights, a small input), the box and the other
# anchor-wise groups are measured on this many highest-scoring anchors instead.
FALLBACK_ANCHORS = 100


def distortion_terms(reference: list[np.ndarray], candidate: list[np.ndarray],
                     groups: Sequence[Sequence[OutputGroup]]) -> np.ndarray:
    """How far `candidate` outputs are from `reference`, one term per output group (`groups[i]`: the
    groups of output i, from the YOLO facts; an output without groups is one term).

    Box rows: their error relative to their own size (centre offsets / width, height; log width and
    height ratios), weighted by the reference score over the confident anchors, which is what IoU and so
    mAP50-95 feel (the noise-to-signal energy of raw pixel coordinates, used before, is ~1e-4 for any
    pruning and let the head's box convs be cut in half: mAP50-95 at 20% fewer MACs 31.9, now 38.4).
    Class scores: their noise-to-signal energy over all anchors. Other anchor-wise groups (mask
    coefficients, keypoints, angle): their noise-to-signal energy over the same weighted anchors.
    Anything else (prototypes, class probabilities, unknown outputs): its noise-to-signal energy.
    """
    terms = []
    for ref, new, parts in zip(reference, candidate, groups):
        ref, new = ref.astype(np.float64), new.astype(np.float64)
        scores = next((g for g in parts if g.role == "scores" and g.anchor_wise and ref.ndim == 3), None)
        if scores is None:
            terms += [noise_to_signal(_part(ref, g), _part(new, g)) for g in parts] or [noise_to_signal(ref, new)]
            continue
        weight = anchor_weights(_part(ref, scores))
        for group in parts:
            old_part, new_part = _part(ref, group), _part(new, group)
            if group is scores or not group.anchor_wise or ref.ndim != 3:
                terms.append(noise_to_signal(old_part, new_part))
            elif group.role == "box":
                terms.append(_box_error(old_part, new_part, weight))
            else:
                energy = np.sum(weight * np.sum(old_part ** 2, axis=0))
                terms.append(float(np.sum(weight * np.sum((old_part - new_part) ** 2, axis=0)) / max(energy, 1e-30)))
    return np.asarray(terms)


def anchor_weights(scores: np.ndarray) -> np.ndarray:
    """Per anchor: its best class score where that is confident, else 0; where no anchor is, 1 on the
    FALLBACK_ANCHORS highest-scoring anchors (so the measure never comes out empty)."""
    best = scores.max(axis=0)
    weight = np.where(best > CONFIDENT_SCORE, best, 0.0)
    if not np.any(weight):
        weight[np.argsort(best, kind="stable")[-FALLBACK_ANCHORS:]] = 1.0
    return weight


def _box_error(box: np.ndarray, box_new: np.ndarray, weight: np.ndarray) -> float:
    width, height = np.maximum(box[2], 1e-3), np.maximum(box[3], 1e-3)
    error = (((box_new[0] - box[0]) / width) ** 2 + ((box_new[1] - box[1]) / height) ** 2
             + np.log(np.maximum(box_new[2], 1e-3) / width) ** 2
             + np.log(np.maximum(box_new[3], 1e-3) / height) ** 2)
    return float(np.sum(weight * error) / max(np.sum(weight), 1e-30))


def _part(array: np.ndarray, group: OutputGroup) -> np.ndarray:
    """The group's rows of a batch-1 output ([rows, anchors] for an anchor-wise output)."""
    if group.rows is None:
        return array
    rows = np.asarray(group.rows)
    if array.ndim == 3 and group.axis == 1:
        contiguous = np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows)))
        return array[0, int(rows[0]): int(rows[0]) + len(rows)] if contiguous else array[0][rows]
    return group.take(array)


def noise_to_signal(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.sum((reference - candidate) ** 2) / max(np.sum(reference ** 2), 1e-30))
