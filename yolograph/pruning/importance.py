"""Channel importance: one score per channel class (higher = keep).

Criteria: l1 / l2 norm of each member conv's filters, BatchNormalization |gamma|, or activation (each
consumer conv's ||W[:, c]|| times the channel's RMS on calibration images, from the calibration
moments `yolograph.pruning.activations.collect_moments` gathers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import numpy as np

from yolograph.analysis.channel_groups import ChannelAnalysis, ChannelGroup
from yolograph.ir.graph_view import constant_value
from yolograph.ir.model import Model
from yolograph.pruning.errors import NoBatchNorm, PruningError

Moments = dict[str, np.ndarray]  # tensor -> augmented second moment E[[x;1][x;1]^T] over positions

CRITERIA = ("l1", "l2", "bn-gamma", "activation")


def class_importance(
    model: Model, analysis: ChannelAnalysis, criterion: str, moments: Moments | None = None
) -> dict[int, float]:
    """Raw importance of every channel class under `criterion` (one of CRITERIA)."""
    scores: dict[int, float] = defaultdict(float)
    if criterion in ("l1", "l2"):
        order = 1 if criterion == "l1" else 2
        for node in model.nodes_by_op("Conv"):
            out = node.outputs[0].name
            weight = constant_value(node.inputs[1])
            if out not in analysis.tensor_atoms or weight is None:
                continue
            norms = np.linalg.norm(np.asarray(weight, np.float64).reshape(weight.shape[0], -1), ord=order, axis=1)
            for root, value in zip(analysis.tensor_roots(out), norms):
                scores[int(root)] += float(value)
    elif criterion == "bn-gamma":
        bns = model.nodes_by_op("BatchNormalization")
        if not bns:
            raise NoBatchNorm()
        for node in bns:
            source = node.inputs[0].name
            gamma = constant_value(node.inputs[1])
            if source not in analysis.tensor_atoms or gamma is None:
                continue
            for root, value in zip(analysis.tensor_roots(source), np.abs(np.asarray(gamma, np.float64))):
                scores[int(root)] += float(value)
    elif criterion == "activation":
        if moments is None:
            raise PruningError("Activation importance needs calibration moments; collect them first.")
        for source, w in measured_convs(model, moments):
            second = moments[source]
            rms = np.sqrt(np.maximum(np.diag(second)[:-1], 0.0))
            column_norm = np.linalg.norm(w.transpose(1, 0, 2, 3).reshape(w.shape[1], -1), axis=1)
            for root, value in zip(analysis.tensor_roots(source), column_norm * rms):
                scores[int(root)] += float(value)
    else:
        raise PruningError(f"Unknown importance criterion {criterion!r}; use one of {', '.join(CRITERIA)}.")
    return dict(scores)


def normalized_scores(groups: list[ChannelGroup], scores: dict[int, float]) -> dict[int, float]:
    """Scores divided by their group's mean, so groups with different weight scales compare."""
    normalized = {}
    for group in groups:
        values = np.array([scores.get(root, 0.0) for root in group.classes])
        mean = float(values.mean()) if len(values) and values.mean() > 0 else 1.0
        for root, value in zip(group.classes, values):
            normalized[root] = float(value) / mean
    return normalized


def measured_convs(model: Model, moments: Moments) -> Iterator[tuple[str, np.ndarray]]:
    """(input tensor name, float64 weight) of each ungrouped Conv with a constant weight whose input
    has calibration moments: the convs whose input channels the activation statistics describe."""
    for node in model.nodes_by_op("Conv"):
        source = node.inputs[0].name
        weight = constant_value(node.inputs[1])
        if int(node.attrs.get("group", 1)) == 1 and source in moments and weight is not None:
            yield source, np.asarray(weight, np.float64)
