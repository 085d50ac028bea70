"""`yolograph predict`: decode + drawing for every task's fixture, --compare, video, bad sources."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolograph.evaluation.inference import TaskModel
from yolograph.evaluation.predictions import Predictions
from yolograph.evaluation.tasks import TaskLayout
from yolograph.inspection.draw import class_color, draw_predictions, side_by_side
from yolograph.inspection.predict import run_predict

VARIANTS = ("yolov8n-seg-rand.onnx", "yolov8n-pose-rand.onnx", "yolov8n-obb-rand.onnx", "yolov8n-cls-rand.onnx",
            "yolo11n-rand.onnx", "yolo26n-rand.onnx")
CLI = [sys.executable, "-m", "yolograph.cli", "predict"]


@pytest.fixture(scope="module")
def image(coco_dir: Path) -> Path:
    return sorted((coco_dir / "images" / "train2017").glob("*.jpg"))[4]  # 000000000036: a person, an umbrella


# ----------------------------------------------------------------------------- every fixture, end to end


@pytest.mark.parametrize("name", VARIANTS)
def test_predict_each_fixture_writes_a_drawn_image_and_its_json(fixtures_dir: Path, image: Path, name, tmp_path):
    model = TaskModel.open(fixtures_dir / "variants" / name, threads=2)
    run = run_predict(model, image, tmp_path, conf=0.5)
    picture, original = cv2.imread(str(tmp_path / f"{image.stem}.jpg")), cv2.imread(str(image))
    assert picture.shape == original.shape
    changed = np.abs(picture.astype(int) - original.astype(int)).max(axis=2) > 40  # beyond JPEG noise
    document = json.loads((tmp_path / "predictions.json").read_text())
    (record,) = document["results"]
    assert document["task"] == model.task and record["predictions"]["task"] == model.task
    if model.task == "classify":
        top5 = record["predictions"]["top5"]
        assert len(top5) == 5 and top5[0]["name"].startswith("class_")
        assert changed[:40, :80].mean() > 0.2  # the top-5 table in the top-left corner
        return
    detections = record["predictions"]["detections"]
    assert len(detections) == run.detections > 0 and all(d["score"] >= 0.5 for d in detections)
    key = {"segment": "mask_area", "pose": "keypoints", "obb": "rotated_box"}.get(model.task)
    assert key is None or all(key in d for d in detections)
    assert changed.mean() > 0.01


def test_yolov8n_finds_and_draws_the_person_and_umbrella(yolov8n_path: Path, image: Path, tmp_path):
    model = TaskModel.open(yolov8n_path, threads=2)
    run_predict(model, image, tmp_path)
    detections = json.loads((tmp_path / "predictions.json").read_text())["results"][0]["predictions"]["detections"]
    assert {d["name"] for d in detections} >= {"person", "umbrella"}
    person = next(d for d in detections if d["name"] == "person")
    x1, y1, _, y2 = (round(v) for v in person["box"])
    picture = cv2.imread(str(tmp_path / f"{image.stem}.jpg")).astype(int)
    edge = picture[(y1 + y2) // 2, max(x1, 1) - 1 : x1 + 2]  # the box's left edge, in the person colour
    assert np.abs(edge - np.array(class_color(0))).sum(axis=1).min() < 60


def test_compare_draws_both_models_side_by_side(yolov8n_path: Path, fixtures_dir: Path, image: Path, tmp_path):
    done = subprocess.run([*CLI, str(yolov8n_path), str(image), "-o", str(tmp_path), "--compare",
                           str(fixtures_dir / "variants" / "yolo11n-rand.onnx"), "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["images"] == 1
    original = cv2.imread(str(image))
    picture = cv2.imread(str(tmp_path / f"{image.stem}.jpg"))
    assert picture.shape[1] == 2 * original.shape[1] + 8 and picture.shape[0] > original.shape[0]
    record = json.loads((tmp_path / "predictions.json").read_text())["results"][0]
    assert "compare_predictions" in record


# ----------------------------------------------------------------------------- drawing, pixel by pixel


def _layout(task: str) -> TaskLayout:
    return TaskLayout(task, 3, {0: "cat", 1: "dog", 2: "bird"}, kpt_shape=(17, 3) if task == "pose" else None)


def _one(task: str, **extra) -> Predictions:
    return Predictions(task, (120, 160), np.array([[40, 30, 120, 100]], np.float32), np.array([0.9], np.float32),
                       np.array([1], np.int64), **extra)


def test_box_and_label_are_drawn_in_the_class_colour():
    canvas = draw_predictions(np.zeros((120, 160, 3), np.uint8), _one("detect"), _layout("detect"))
    assert tuple(canvas[65, 40]) == class_color(1)  # left edge, half way down
    assert tuple(canvas[100, 80]) == class_color(1)  # bottom edge
    assert canvas[60:80, 60:100].max() == 0  # inside stays untouched
    assert (canvas[15:30, 40:100] > 0).any()  # the label above the box


def test_mask_is_blended_inside_only():
    mask = np.zeros((1, 120, 160), bool)
    mask[0, 50:80, 60:90] = True
    canvas = draw_predictions(np.full((120, 160, 3), 200, np.uint8), _one("segment", masks=mask), _layout("segment"))
    expected = (np.full(3, 200) * 0.5 + np.array(class_color(1)) * 0.5).astype(int)
    assert np.abs(canvas[65, 75].astype(int) - expected).max() <= 1
    assert tuple(canvas[65, 100]) == (200, 200, 200)


def test_keypoints_and_skeleton_are_drawn_where_visible():
    points = np.zeros((1, 17, 3), np.float32)
    points[0, :, 0], points[0, :, 1], points[0, :, 2] = np.linspace(50, 110, 17), 60, 0.9
    points[0, 16, 2] = 0.1  # not visible: not drawn
    points[0, 16, :2] = (150, 110)
    canvas = draw_predictions(np.zeros((120, 160, 3), np.uint8), _one("pose", keypoints=points), _layout("pose"))
    assert canvas[60, 50].max() > 0 and canvas[110, 150].max() == 0


def test_rotated_box_corners_are_drawn():
    rotated = np.array([[80, 60, 60, 20, np.pi / 4]], np.float32)
    canvas = draw_predictions(np.zeros((120, 160, 3), np.uint8), _one("obb", rotated=rotated), _layout("obb"))
    corner = (80 + 30 * np.cos(np.pi / 4) - 10 * np.sin(np.pi / 4), 60 + 30 * np.sin(np.pi / 4) + 10 * np.cos(np.pi / 4))
    x, y = round(corner[0]), round(corner[1])
    assert canvas[y - 1 : y + 2, x - 1 : x + 2].max() > 0
    assert canvas[60, 80].max() == 0  # the centre is not filled


def test_top5_table_and_side_by_side():
    found = Predictions("classify", (120, 160), np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                        np.zeros(0, np.int64), top5=np.array([2, 0, 1]), top5_scores=np.array([0.7, 0.2, 0.1]))
    canvas = draw_predictions(np.zeros((120, 160, 3), np.uint8), found, _layout("classify"))
    assert (canvas[5:20, 5:40] == 255).any() and canvas[100:, 100:].max() == 0
    pair = side_by_side(canvas, canvas, ("a", "b"))
    assert pair.shape[1] == 2 * 160 + 8 and pair.shape[0] > 120


# ----------------------------------------------------------------------------- video and bad sources


def test_video_frames_are_annotated_into_a_video(yolov8n_path: Path, image: Path, tmp_path):
    video = tmp_path / "clip.mp4"
    frame = cv2.resize(cv2.imread(str(image)), (320, 240))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (320, 240))
    for shift in range(4):
        writer.write(np.roll(frame, shift * 8, axis=1))
    writer.release()
    out = tmp_path / "out"
    run = run_predict(TaskModel.open(yolov8n_path, threads=2), video, out, max_frames=3)
    assert run.images == 3
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 3
    records = json.loads((out / "predictions.json").read_text())["results"]
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name, content, message", [
    ("broken.jpg", b"not a jpeg", "cannot be decoded; replace or remove the corrupt file."),
    ("broken.mp4", b"not a video", "cannot be decoded (no frame could be read)"),
    ("notes.txt", b"hello", "is neither an image"),
])
def test_unreadable_sources_give_one_error_line_and_write_nothing(yolov8n_path, tmp_path, name, content, message):
    source = tmp_path / name
    source.write_bytes(content)
    out = tmp_path / "out"
    done = subprocess.run([*CLI, str(yolov8n_path), str(source), "-o", str(out)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists() or not list(out.iterdir())
