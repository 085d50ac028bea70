"""Task-aware YOLO facts: task, class count, head branches by role and output groups, for every task."""

from __future__ import annotations

import json

import numpy as np
import pytest

from yolograph.frontends import load_model
from yolograph.pipeline import run_pipeline
from yolograph.pipeline.verify import labelled_output_groups

# fixture -> (task, classes, branch roles with widths, output groups as (label, row count or None))
EXPECTED = {
    "yolov8n-seg-rand": ("segment", 80, {"box": 64, "class": 80, "mask_coefficients": 32, "prototypes": 32},
                         [("output0:box", 4), ("output0:scores", 80), ("output0:mask_coefficients", 32),
                          ("output1:prototypes", None)]),
    "yolov8n-pose-rand": ("pose", 1, {"box": 64, "class": 1, "keypoints": 51},
                          [("output0:box", 4), ("output0:scores", 1), ("output0:keypoint_xy", 34),
                           ("output0:keypoint_visibility", 17)]),
    "yolov8n-obb-rand": ("obb", 15, {"box": 64, "class": 15, "angle": 1},
                         [("output0:box", 4), ("output0:scores", 15), ("output0:angle", 1)]),
    "yolov8n-cls-rand": ("classify", 1000, {"classifier": 1000}, [("output0:class_probabilities", None)]),
    "yolo11n-rand": ("detect", 80, {"box": 64, "class": 80}, [("output0:box", 4), ("output0:scores", 80)]),
    "yolo26n-rand": ("detect", 80, {"box": 4, "class": 80}, [("output0:box", 4), ("output0:scores", 80)]),
}


@pytest.fixture(scope="module")
def variants(fixtures_dir):
    return fixtures_dir / "variants"


def _load(variants, name, drop_metadata=()):
    model = load_model(variants / f"{name}.onnx")
    for key in drop_metadata:
        model.metadata.pop(key, None)
    model.invalidate()
    return model


def _check(model, name):
    task, classes, branches, groups = EXPECTED[name]
    facts = model.facts
    assert facts.task == task and facts.num_classes == classes
    assert {b.role: b.channels for b in facts.branches} == branches
    assert [(g.label, None if g.rows is None else len(g.rows)) for g in facts.output_groups] == groups


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_facts_of_every_task(variants, name):
    _check(_load(variants, name), name)


@pytest.mark.parametrize("name", ["yolov8n-seg-rand", "yolov8n-pose-rand", "yolov8n-obb-rand", "yolo26n-rand"])
def test_facts_from_structure_alone(variants, name):
    """Without task, names and kpt_shape metadata the head's structure gives the same facts."""
    _check(_load(variants, name, drop_metadata=("task", "names", "kpt_shape")), name)


def test_class_count_is_not_output_width_minus_four(variants):
    """A one-class pose head is 56 rows wide and an obb head 20: neither has 52 or 16 classes."""
    assert _load(variants, "yolov8n-pose-rand").facts.num_classes == 1
    assert _load(variants, "yolov8n-obb-rand", drop_metadata=("names",)).facts.num_classes == 15


def test_pose_groups_interleave_keypoints(variants):
    facts = _load(variants, "yolov8n-pose-rand").facts
    groups = {g.role: g for g in facts.output_groups}
    assert facts.keypoint_shape == (17, 3)
    assert groups["keypoint_xy"].rows[:4] == (5, 6, 8, 9) and groups["keypoint_visibility"].rows[:2] == (7, 10)
    covered = sorted(r for g in facts.output_groups for r in g.rows)
    assert covered == list(range(56))  # every row of the output is judged, exactly once


def test_yolo26_has_no_dfl(variants):
    facts = _load(variants, "yolo26n-rand").facts
    assert facts.reg_max == 1 and facts.dfl_conv is None


def test_official_export_with_per_scale_concat(yolov8n):
    """The trained yolov8n concatenates [box, class] per scale before the scales: same facts."""
    facts = yolov8n.facts
    assert {b.role: (b.channels, len(b.nodes)) for b in facts.branches} == {"box": (64, 3), "class": (80, 3)}
    assert [g.label for g in facts.output_groups] == ["output0:box", "output0:scores"]


@pytest.mark.parametrize("name", ["yolov8n-seg-rand", "yolov8n-pose-rand", "yolov8n-obb-rand"])
def test_groups_survive_passes(variants, name):
    model = _load(variants, name)
    for pipeline in ("fold-bn,cleanup,fast-dfl", "cleanup,to-nhwc", "insert-qdq{profile=trt}"):
        out, _ = run_pipeline(model, pipeline)
        assert out.facts.output_groups == model.facts.output_groups, pipeline
        assert {b.role for b in out.facts.branches} == {b.role for b in model.facts.branches}, pipeline


def test_labelled_output_groups_split_the_outputs(variants):
    model = _load(variants, "yolov8n-seg-rand")
    outputs = [np.zeros((1, 116, 8400), np.float32), np.zeros((1, 32, 160, 160), np.float32)]
    shapes = {label: array.shape for label, array in labelled_output_groups(model, outputs)}
    assert shapes == {"output0:box": (1, 4, 8400), "output0:scores": (1, 80, 8400),
                      "output0:mask_coefficients": (1, 32, 8400), "output1:prototypes": (1, 32, 160, 160)}


def test_inspect_json_shows_branches_and_groups(variants, capsys):
    from yolograph.cli import main

    assert main(["inspect", str(variants / "yolov8n-obb-rand.onnx"), "--json"]) == 0
    yolo = json.loads(capsys.readouterr().out)["yolo"]
    assert yolo["task"] == "obb" and yolo["num_classes"] == 15
    assert [b["role"] for b in yolo["branches"]] == ["box", "class", "angle"]
    assert [(g["role"], g["kind"], g["rows"]) for g in yolo["output_groups"]] == [
        ("box", "coordinate", [0, 4, 4]), ("scores", "score", [4, 19, 15]), ("angle", "coordinate", [19, 20, 1])]
    assert main(["inspect", str(variants / "yolov8n-obb-rand.onnx")]) == 0
    text = capsys.readouterr().out
    assert "task=obb classes=15" in text and "group    output0 angle (coordinate): rows 19:20" in text
