"""prune{macs=0.1} on every task's head (segment, pose, obb, classify, YOLO11, YOLO26): valid graphs that
ONNX Runtime runs, every output's shape kept, head branches untouched, MACs reduced; and no crash where
no anchor is confident."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from yolograph.passes.prune import Prune, PruneOptions

from yolograph.analysis import find_channel_groups
from yolograph.frontends import load_model
from yolograph.ir.cost import model_cost
from yolograph.ir.graph_view import constant_value
from yolograph.runtime import OrtOptions, OrtRunner

VARIANTS = ["yolov8n-seg-rand", "yolov8n-pose-rand", "yolov8n-obb-rand", "yolov8n-cls-rand", "yolo11n-rand",
            "yolo26n-rand"]
# Branches made of final convs (a classifier is a Gemm: what feeds it is blocked by the Flatten before it).
CONV_ROLES = ("box", "class", "mask_coefficients", "keypoints", "angle", "prototypes")


def _variant(fixtures_dir, name):
    return load_model(fixtures_dir / "variants" / f"{name}.onnx")


def _options(coco_dir, **extra):
    # Tiny image counts: the activation criterion with its sensitivity measure and a least-squares refit.
    return PruneOptions(**{"macs": 0.1, "images": str(coco_dir), "count": 1, "sensitivity": 1, "steps": 1,
                           "reconstruct": "local", **extra})


def _head_widths(model):
    return {node: np.asarray(constant_value(model.node(node).inputs[1])).shape[0]
            for branch in model.facts.branches if branch.role in CONV_ROLES for node in branch.nodes}


def _outputs(model, seed=0):
    image = np.random.default_rng(seed).random(tuple(model.inputs[0].shape), dtype=np.float32)
    return OrtRunner(model, OrtOptions(threads=2)).run(image)


@pytest.mark.parametrize("name", VARIANTS)
def test_head_branches_are_blocked_groups(fixtures_dir, name):
    model = _variant(fixtures_dir, name)
    widths = _head_widths(model)
    roles = {b.role for b in model.facts.branches}
    assert widths or "classifier" in roles
    for group in find_channel_groups(model):
        if set(group.member_names) & set(widths):
            assert not group.prunable, f"{name}: head branch group {group.member_names} is prunable"


@pytest.mark.parametrize("name", VARIANTS)
def test_prune_keeps_every_task_output(fixtures_dir, coco_dir, name):
    model = _variant(fixtures_dir, name)
    pruned = model.copy()
    stats = Prune(_options(coco_dir)).run(pruned).stats
    onnx.checker.check_model(pruned.to_onnx(), full_check=True)
    before, after = _outputs(model), _outputs(pruned)
    assert [o.shape for o in after] == [o.shape for o in before]
    assert all(np.isfinite(o).all() for o in after)
    assert model_cost(pruned).macs < model_cost(model).macs and stats["macs_removed"] > 0.05
    assert _head_widths(pruned) == _head_widths(model)
    assert pruned.facts.task == model.facts.task
    assert [b.role for b in pruned.facts.branches] == [b.role for b in model.facts.branches]


def _unconfident(model, bias):
    """The model with every class logit pushed to `bias` (no anchor scores anything)."""
    model = model.copy()
    for name in model.facts.branch("class").nodes:
        tensor = model.node(name).inputs[2]
        tensor.values = np.full_like(np.asarray(constant_value(tensor)), bias)
    model.invalidate()
    return model


@pytest.mark.parametrize("name", ["yolov8n-obb-rand", "yolo26n-rand"])
def test_no_confident_anchor_is_measured_on_the_top_anchors(fixtures_dir, coco_dir, name):
    """Scores exactly 0 everywhere (sigmoid(-200) in float32), as on default-initialised exports: the
    sensitivity measure falls back to the highest-scoring anchors instead of dividing by zero."""
    model = _unconfident(_variant(fixtures_dir, name), -200.0)
    assert not np.any(_outputs(model)[0][0, 4:4 + model.facts.num_classes])
    pruned = model.copy()
    stats = Prune(_options(coco_dir)).run(pruned).stats
    assert stats["macs_removed"] > 0.05 and stats["sensitivity_groups"] > 0
    assert [o.shape for o in _outputs(pruned)] == [o.shape for o in _outputs(model)]


def test_fallback_anchor_weights():
    from yolograph.pruning.sensitivity import FALLBACK_ANCHORS, anchor_weights

    scores = np.zeros((3, 500))
    scores[1, 7] = 0.5
    assert np.flatnonzero(anchor_weights(scores)).tolist() == [7]
    scores[1, 7] = 0.01
    weight = anchor_weights(scores)
    assert weight[7] == 1.0 and np.count_nonzero(weight) == FALLBACK_ANCHORS
