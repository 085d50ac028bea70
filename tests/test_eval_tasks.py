"""Every task's evaluation: label-free agreement with a reference model, task label files, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from yolograph.errors import DataError, ModelError
from yolograph.evaluation.fidelity import agreement, evaluate_task
from yolograph.evaluation.inference import TaskModel
from yolograph.evaluation.labels import read_task_labels
from yolograph.evaluation.masks import polygons_to_masks
from yolograph.evaluation.predictions import Predictions
from yolograph.evaluation.rotated import corners, rotated_iou
from yolograph.evaluation.task_metrics import TaskScorer, oks
from yolograph.evaluation.tasks import TaskLayout

VARIANTS = {
    "segment": "yolov8n-seg-rand.onnx",
    "pose": "yolov8n-pose-rand.onnx",
    "obb": "yolov8n-obb-rand.onnx",
    "classify": "yolov8n-cls-rand.onnx",
    "yolo11n": "yolo11n-rand.onnx",
    "yolo26n": "yolo26n-rand.onnx",
}
TASK_OF = {"segment": "segment", "pose": "pose", "obb": "obb", "classify": "classify", "yolo11n": "detect",
           "yolo26n": "detect"}


@pytest.fixture(scope="module")
def variants(fixtures_dir: Path) -> Path:
    return fixtures_dir / "variants"


@pytest.fixture(scope="module")
def two_images(coco_dir: Path) -> list[Path]:
    return sorted((coco_dir / "images" / "train2017").glob("*.jpg"))[32:34]


@pytest.fixture(scope="module")
def opened(variants: Path) -> dict[str, TaskModel]:
    return {key: TaskModel.open(variants / name, threads=2) for key, name in VARIANTS.items()}


# ----------------------------------------------------------------------------- task layouts


@pytest.mark.parametrize("key", list(VARIANTS))
def test_each_fixture_reads_its_task_and_class_count(opened, key):
    layout = opened[key].layout
    assert layout.task == TASK_OF[key]
    assert layout.num_classes == {"pose": 1, "obb": 15, "classify": 1000}.get(key, 80)
    assert layout.kpt_shape == ((17, 3) if key == "pose" else None)
    assert layout.num_masks == (32 if key == "segment" else 0)


# ----------------------------------------------------------------------------- label-free agreement


@pytest.mark.parametrize("key", list(VARIANTS))
def test_a_copy_of_the_reference_scores_one(opened, key, two_images):
    score = agreement(opened[key], opened[key], two_images)
    assert score.task == TASK_OF[key] and score.images == 2
    assert score.value == pytest.approx(1.0)


def test_trained_yolov8n_copy_scores_one_and_another_model_scores_low(yolov8n_path, opened, two_images):
    reference = TaskModel.open(yolov8n_path, threads=2)
    assert agreement(reference, reference, two_images).value == pytest.approx(1.0)
    assert agreement(opened["yolo11n"], reference, two_images).value < 0.2  # random weights find nothing real


def test_agreement_drops_when_the_candidate_is_perturbed(yolov8n_path, two_images):
    """Noise on the input of the candidate only: the score must fall below 1 but stay well above 0."""
    reference = TaskModel.open(yolov8n_path, threads=2)

    class Noisy:
        def __init__(self, runner):
            self.runner, self.metadata, self.imgsz = runner, runner.metadata, runner.imgsz
            self.rng = np.random.default_rng(0)

        def run(self, feed):
            noisy = feed + self.rng.normal(0, 0.06, feed.shape).astype(np.float32)
            return self.runner.run(np.clip(noisy, 0, 1))

    candidate = TaskModel(Noisy(reference.runner), reference.imgsz, reference.layout)
    value = agreement(candidate, reference, two_images).value
    assert 0.3 < value < 0.98


def test_reference_of_another_task_or_class_count_is_refused(opened, yolov8n_path, two_images):
    with pytest.raises(ModelError, match="reference is a pose model but the candidate is a segment model"):
        agreement(opened["segment"], opened["pose"], two_images)
    from yolograph.frontends.builder import build_builtin

    with pytest.raises(ModelError, match="reference has 80 classes but the candidate 3"):
        agreement(build_builtin(num_classes=3, imgsz=320), yolov8n_path, two_images)


def test_images_of_the_wrong_kind_are_data_errors(yolov8n_path, tmp_path: Path):
    model = TaskModel.open(yolov8n_path, threads=2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="No images"):
        agreement(model, model, tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="cannot be decoded"):
        agreement(model, model, broken)


def _tiny_onnx(path: Path, task: str | None, classes: int = 3) -> Path:
    node_pool = helper.make_node("GlobalAveragePool", ["images"], ["pooled"])
    node_flat = helper.make_node("Flatten", ["pooled"], ["flat"])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, classes], np.ones(3 * classes, np.float32))
    node_mm = helper.make_node("MatMul", ["flat", "w"], ["output0"])
    graph = helper.make_graph([node_pool, node_flat, node_mm], "tiny",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, classes])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if task:
        model.metadata_props.add(key="task", value=task)
    onnx.save(model, path)
    return path


def test_a_model_whose_task_cannot_be_read_is_refused(tmp_path: Path):
    with pytest.raises(ModelError, match="task of .* cannot be read"):
        TaskModel.open(_tiny_onnx(tmp_path / "plain.onnx", None))
    with pytest.raises(ModelError, match="'depth', which yolograph cannot decode"):
        TaskModel.open(_tiny_onnx(tmp_path / "depth.onnx", "depth"))
    assert TaskModel.open(_tiny_onnx(tmp_path / "cls.onnx", "classify")).layout.num_classes == 3


def test_cli_eval_reference_json_and_one_line_errors(variants: Path, coco_dir: Path):
    cli = [sys.executable, "-m", "yolograph.cli", "eval"]
    model = str(variants / VARIANTS["pose"])
    done = subprocess.run([*cli, model, "--reference", model, "--data", str(coco_dir), "--images", "32:33", "--json"],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert result["task"] == "pose" and result["metric"] == "OKS mAP50-95" and result["agreement"] == 1.0
    wrong = subprocess.run([*cli, model, "--reference", str(variants / VARIANTS["obb"]), "--data", str(coco_dir),
                            "--images", "32:33"], capture_output=True, text=True, check=False)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [("error: The reference is an obb model but the candidate is a pose "
                                                  "model; compare two models of the same task.")]


# ----------------------------------------------------------------------------- labelled evaluation


def _layout(task: str, classes: int = 2, kpt_shape=None) -> TaskLayout:
    return TaskLayout(task, classes, {i: f"c{i}" for i in range(classes)}, kpt_shape=kpt_shape)


def test_segment_labels_are_polygons_rasterised_at_the_mask_scale(tmp_path: Path):
    label = tmp_path / "a.txt"
    label.write_text("1 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n0 0.5 0.5 0.2 0.2\n")
    truth = read_task_labels(label, _layout("segment"), (100, 200), mask_scale=0.5)
    assert truth.classes.tolist() == [1, 0] and truth.masks.shape == (2, 50, 100)
    assert truth.boxes[0].tolist() == pytest.approx([20, 10, 100, 50])
    assert truth.masks[0].sum() == pytest.approx(40 * 20, rel=0.15)  # 0.4 x 0.4 of a 100x50 mask
    assert truth.masks[1, 25, 50] and not truth.masks[1, 5, 5]


def test_pose_and_obb_labels(tmp_path: Path):
    pose = tmp_path / "pose.txt"
    pose.write_text("0 0.5 0.5 0.4 0.6 0.5 0.3 2 0.0 0.0 0 0.6 0.7 1\n")
    truth = read_task_labels(pose, _layout("pose", 1, (3, 3)), (100, 200))
    assert truth.keypoints.shape == (1, 3, 3)
    assert truth.keypoints[0, 0].tolist() == pytest.approx([100, 30, 2])
    assert truth.keypoints[0, 1, 2] == 0
    obb = tmp_path / "obb.txt"
    points = corners(np.array([[100, 50, 60, 20, 0.4]]))[0] / [200, 100]
    obb.write_text("1 " + " ".join(f"{v:.6f}" for v in points.reshape(-1)) + "\n")
    truth = read_task_labels(obb, _layout("obb"), (100, 200))
    assert rotated_iou(truth.rotated, np.array([[100, 50, 60, 20, 0.4]]))[0, 0] == pytest.approx(1.0, abs=1e-3)
    bad = tmp_path / "bad.txt"
    bad.write_text("0 0.1 0.2 0.3\n")
    with pytest.raises(DataError, match="line 1 of the label file .* an OBB label is"):
        read_task_labels(bad, _layout("obb"), (100, 200))
    with pytest.raises(DataError, match="a pose label of 3 keypoints"):
        read_task_labels(bad, _layout("pose", 1, (3, 3)), (100, 200))


def _predictions(task: str, boxes, classes, scores=None, **extra) -> Predictions:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.ones(len(boxes), np.float32) if scores is None else np.asarray(scores, np.float32)
    return Predictions(task, (100, 200), boxes, scores, np.asarray(classes, np.int64), **extra)


def test_mask_scorer_perfect_half_and_wrong_class():
    square = [np.array([[20, 20], [60, 20], [60, 60], [20, 60]], float)]
    mask = polygons_to_masks(square, (100, 200))
    truth = _predictions("segment", [[20, 20, 60, 60]], [0], masks=mask)
    half = mask.copy()
    half[:, :, 42:] = False  # 22 of the 41 columns: IoU 0.54
    for predicted, expected in ((mask, 1.0), (half, None)):
        scorer = TaskScorer("segment")
        scorer.add(_predictions("segment", [[20, 20, 60, 60]], [0], masks=predicted), truth)
        value = scorer.result().value
        assert value == pytest.approx(1.0) if expected else value == pytest.approx(0.1)  # only the .50 threshold of ten
    scorer = TaskScorer("segment")
    scorer.add(_predictions("segment", [[20, 20, 60, 60]], [1], masks=mask), truth)
    assert scorer.result().value == 0.0


def test_oks_is_one_for_the_same_points_and_falls_with_distance():
    truth = np.array([[[50, 50, 2], [60, 60, 2], [0, 0, 0]]], float)
    box = np.array([[40, 40, 70, 70]], float)
    sigmas = np.full(3, 1 / 3)
    assert oks(truth, truth, box, sigmas)[0, 0] == pytest.approx(1.0)
    moved = truth.copy()
    moved[..., :2] += 3
    moved[0, 2, :2] = 99  # an unlabelled truth keypoint does not count
    value = oks(moved, truth, box, sigmas)[0, 0]
    assert 0.5 < value < 1.0


class FakeRunner:
    """A 'model' whose raw output is fixed: the anchors it is given, on any 64x64 image."""

    imgsz = (64, 64)

    def __init__(self, metadata: dict[str, str], raw: np.ndarray) -> None:
        self.metadata, self.raw = metadata, raw

    def run(self, feed):
        return [self.raw[None].astype(np.float32)]


def _dataset(root: Path, label_lines: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "a.png"), np.full((64, 64, 3), 90, np.uint8))
    (root / "labels" / "a.txt").write_text("\n".join(label_lines) + "\n")
    return root / "images"


def test_labelled_obb_evaluation_from_corner_label_files(tmp_path: Path):
    rboxes = np.array([[20, 20, 16, 8, 0.3], [44, 40, 20, 10, 1.2]])
    raw = np.zeros((4 + 2 + 1, 2))
    raw[:4], raw[6] = rboxes[:, :4].T, rboxes[:, 4]
    raw[4, 0], raw[5, 1] = 0.9, 0.8  # anchor 0: class 0, anchor 1: class 1
    model = TaskModel.open(FakeRunner({"task": "obb", "names": "{0: 'a', 1: 'b'}"}, raw))
    lines = [f"{cls} " + " ".join(f"{v / 64:.6f}" for v in corners(rboxes[cls : cls + 1])[0].reshape(-1))
             for cls in (0, 1)]
    assert evaluate_task(model, _dataset(tmp_path / "right", lines)).value == pytest.approx(1.0)
    swapped = [f"{1 - int(line[0])}{line[1:]}" for line in lines]  # every label of the other class
    assert evaluate_task(model, _dataset(tmp_path / "swapped", swapped)).value == 0.0


def test_labelled_pose_evaluation_from_keypoint_label_files(tmp_path: Path):
    points = np.array([[20, 20, 0.9], [30, 24, 0.9], [26, 40, 0.9]])
    raw = np.zeros((4 + 1 + 9, 1))
    raw[:4, 0] = [25, 30, 20, 30]
    raw[4, 0] = 0.9
    raw[5:, 0] = points.reshape(-1)
    model = TaskModel.open(FakeRunner({"task": "pose", "names": "{0: 'p'}", "kpt_shape": "[3, 3]"}, raw))
    label = "0 " + " ".join(f"{v / 64:.6f}" for v in (25, 30, 20, 30))
    right = label + " " + " ".join(f"{x / 64:.6f} {y / 64:.6f} 2" for x, y, _ in points)
    moved = label + " " + " ".join(f"{(x + 4) / 64:.6f} {y / 64:.6f} 2" for x, y, _ in points)
    assert evaluate_task(model, _dataset(tmp_path / "right", [right])).value == pytest.approx(1.0)
    score = evaluate_task(model, _dataset(tmp_path / "moved", [moved]))
    assert 0.0 < score.value < 1.0 and score.extra["box_map50_95"] == pytest.approx(1.0)


def test_labelled_classify_reads_a_folder_per_class(opened, two_images, tmp_path: Path):
    model = opened["classify"]
    for path in two_images:
        top = model.predict(path).top5
        for rank, cls in ((0, int(top[0])), (4, int(top[4]))):
            folder = tmp_path / f"class_{cls}"
            folder.mkdir(exist_ok=True)
            cv2.imwrite(str(folder / f"{rank}_{path.name}"), cv2.imread(str(path)))
    score = evaluate_task(model, tmp_path)
    assert score.images == 4 and score.value == pytest.approx(0.5) and score.extra["top5"] == pytest.approx(1.0)
    (tmp_path / "not_a_class").mkdir()
    cv2.imwrite(str(tmp_path / "not_a_class" / "x.jpg"), cv2.imread(str(two_images[0])))
    with pytest.raises(DataError, match="folder named 'not_a_class', which is no class"):
        evaluate_task(model, tmp_path)


# ----------------------------------------------------------------------------- compile --eval-data: what a pipeline cost


def test_compare_models_reports_agreement_with_and_without_labels(yolov8n_path, two_images, tmp_path: Path):
    from yolograph.frontends import load_model
    from yolograph.inspection.compare import compare_models
    from yolograph.pipeline import run_pipeline

    before = load_model(yolov8n_path)
    after, _ = run_pipeline(before, "fold-bn,cleanup")
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for path in two_images:
        (unlabelled / path.name).write_bytes(path.read_bytes())
    result = compare_models(before, after, data=unlabelled, agreement=True, threads=2)
    assert result.agreement == pytest.approx(1.0, abs=1e-3) and result.map50_95_after is None
    assert any(line.startswith("agreement with the input model 1.0") for line in result.lines())
    with pytest.raises(DataError, match="no ground-truth"):
        compare_models(before, after, data=unlabelled, threads=2)  # labelled-only, as before
    labelled = compare_models(before, after, data=two_images, agreement=True, threads=2)
    assert labelled.map50_95_before == pytest.approx(labelled.map50_95_after, abs=1e-3)
    assert labelled.to_json()["agreement"] == pytest.approx(1.0, abs=1e-3)


def test_layouts_refuse_end_to_end_exports_and_inconsistent_names():
    from yolograph.evaluation.tasks import layout_from_outputs

    with pytest.raises(ModelError, match="end-to-end export .* end2end=False"):
        layout_from_outputs({"task": "detect", "end2end": "True"}, [(1, 300, 6)])
    with pytest.raises(ModelError, match="names 2 classes in its metadata but its output has 3 class rows"):
        layout_from_outputs({"task": "obb", "names": "{0: 'a', 1: 'b'}"}, [(1, 8, 100)])
    assert layout_from_outputs({}, [(1, 116, 100), (1, 32, 16, 16)]).describe() == "segment with 80 classes"
    with pytest.raises(ModelError, match="without a kpt_shape"):
        layout_from_outputs({"task": "pose"}, [(1, 56, 100)])


@pytest.mark.parametrize("iou", [0.7, 0.3, 0.05])
def test_rotated_nms_skips_far_pairs_without_changing_the_result(iou):
    """The distance pre-filter must keep exactly what the full ProbIoU matrix (Ultralytics' rule) keeps."""
    from yolograph.evaluation.rotated import nms_rotated, probiou

    rng = np.random.default_rng(1)
    n = 1500
    boxes = np.concatenate([rng.uniform(0, 300, (n, 2)), rng.uniform(2, 60, (n, 2)), rng.uniform(0, 3.14, (n, 1))], 1)
    scores = rng.uniform(0, 1, n)
    order = np.argsort(-scores, kind="stable")
    full = np.triu(probiou(boxes[order], boxes[order]), 1)
    expected = order[np.flatnonzero(full.max(axis=0) < iou)][:300]
    np.testing.assert_array_equal(nms_rotated(boxes, scores, iou, max_keep=300), expected)


class FakeSegmentRunner(FakeRunner):
    def __init__(self, raw: np.ndarray, prototypes: np.ndarray) -> None:
        super().__init__({"task": "segment", "names": "{0: 'a', 1: 'b'}"}, raw)
        self.prototypes = prototypes

    def run(self, feed):
        return [self.raw[None].astype(np.float32), self.prototypes[None].astype(np.float32)]


def test_labelled_segment_evaluation_from_polygon_label_files(tmp_path: Path):
    raw = np.zeros((4 + 2 + 1, 1))
    raw[:4, 0] = [32, 32, 24, 16]  # a 24x16 box in the middle of the 64x64 image
    raw[4, 0], raw[6, 0] = 0.9, 1.0  # class 0, mask coefficient 1
    model = TaskModel.open(FakeSegmentRunner(raw, np.ones((1, 16, 16))))  # the mask fills its box
    found = model.predict(np.full((64, 64, 3), 90, np.uint8))
    assert found.masks.shape == (1, 64, 64) and found.masks[0].sum() == 24 * 16
    rectangle = " ".join(f"{v / 64:.6f}" for v in (20, 24, 44, 24, 44, 40, 20, 40))
    score = evaluate_task(model, _dataset(tmp_path / "right", [f"0 {rectangle}"]))
    assert score.extra["box_map50_95"] == pytest.approx(1.0)
    assert score.value > 0.6  # masks meet at half resolution: the polygon's edge pixels differ
    assert evaluate_task(model, _dataset(tmp_path / "other", [f"1 {rectangle}"])).value == 0.0
