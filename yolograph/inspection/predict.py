"""Run a model on an image, a folder of images or a video; write annotated pictures and a JSON of the predictions.

What `yolograph predict` does. An image becomes ``DIR/<name>.jpg``, a video ``DIR/<name>.mp4`` (every
frame annotated), and ``DIR/predictions.json`` lists each image's (or frame's) predictions as
`Predictions.to_json` writes them. With a second model both are drawn side by side and both sets of
predictions are in the JSON. Every file is written atomically: nothing half-written is left behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from yolograph.errors import DataError
from yolograph.evaluation.dataset import IMAGE_SUFFIXES
from yolograph.evaluation.inference import TaskModel
from yolograph.evaluation.preprocess import read_image
from yolograph.inspection.draw import draw_predictions, side_by_side
from yolograph.ir.serialization import check_output_folder, write_bytes_atomic
from yolograph.progress import track

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
JPEG_QUALITY = 90


@dataclass
class PredictRun:
    """What a predict run wrote, and how many images (frames) and detections it saw."""

    written: list[Path] = field(default_factory=list)
    images: int = 0
    detections: int = 0


def source_kind(source: Path) -> str:
    """"image", "folder" or "video"; a DataError for anything else (naming what is accepted)."""
    if source.is_dir():
        return "folder"
    if not source.exists():
        raise DataError(f"The source {source} does not exist; pass an image, a folder of images or a video file.")
    suffix = source.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise DataError(f"The source {source} is neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a video "
                    f"({', '.join(sorted(VIDEO_SUFFIXES))}); pass one of those or a folder of images.")


def folder_images(folder: Path) -> list[Path]:
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"The folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                        "point the source at images.")
    return images


def video_frames(path: Path, max_frames: int | None = None) -> tuple[Iterator[np.ndarray], float]:
    """The frames of a video (BGR) and its frame rate; a DataError if OpenCV cannot decode any frame."""
    # FFmpeg logs its own lines for a broken file; the DataError below is the one line the user needs.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read() if capture.isOpened() else (False, None)
    if not ok or first is None:
        capture.release()
        raise DataError(f"The video {path} cannot be decoded (no frame could be read); check the file or convert "
                        "it to .mp4 (H.264).")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0

    def frames() -> Iterator[np.ndarray]:
        frame, count = first, 0
        try:
            while frame is not None and (max_frames is None or count < max_frames):
                yield frame
                count += 1
                ok, frame = capture.read()
                frame = frame if ok else None
        finally:
            capture.release()

    return frames(), fps


def run_predict(model: TaskModel, source: str | os.PathLike[str], output_dir: str | os.PathLike[str], *,
                conf: float = 0.25, iou: float = 0.7, compare: TaskModel | None = None,
                max_frames: int | None = None) -> PredictRun:
    """Predict every image or frame of `source` and write the annotated result and the JSON to `output_dir`."""
    source, out = Path(source), check_output_folder(output_dir)
    kind = source_kind(source)
    if compare is not None and compare.task != model.task:
        from yolograph.evaluation.tasks import check_same_layout

        check_same_layout(compare.layout, model.layout)
    run, records = PredictRun(), []
    if kind == "video":
        frames, fps = video_frames(source, max_frames)
        target = out / f"{source.stem}.mp4"
        _write_video(target, (_annotate(model, compare, frame, conf, iou, f"{source.name}", i, records, run)
                              for i, frame in enumerate(track(frames, "predict"))), fps)
        run.written.append(target)
    else:
        paths = [source] if kind == "image" else folder_images(source)
        for path in track(paths, "predict"):
            picture = _annotate(model, compare, read_image(path), conf, iou, str(path), None, records, run)
            target = out / f"{path.stem}.jpg"
            write_bytes_atomic(target, _jpeg(picture))
            run.written.append(target)
    document = {"model": model.source, "task": model.task, "conf": conf,
                "compare": compare.source if compare is not None else None, "results": records}
    json_path = out / "predictions.json"
    write_bytes_atomic(json_path, json.dumps(document, indent=1).encode())
    run.written.append(json_path)
    return run


def _annotate(model: TaskModel, compare: TaskModel | None, image: np.ndarray, conf: float, iou: float,
              name: str, frame: int | None, records: list, run: PredictRun) -> np.ndarray:
    found = model.predict(image, conf=conf, iou=iou)
    record = {"source": name, "frame": frame, "predictions": found.to_json(model.layout)}
    picture = draw_predictions(image, found, model.layout)
    run.images += 1
    run.detections += len(found)
    if compare is not None:
        other = compare.predict(image, conf=conf, iou=iou)
        record["compare_predictions"] = other.to_json(compare.layout)
        picture = side_by_side(picture, draw_predictions(image, other, compare.layout),
                               (_title(model.source), _title(compare.source)))
    records.append(record)
    return picture


def _title(source: str) -> str:
    return Path(source.removeprefix("the model ")).name


def _jpeg(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DataError("OpenCV could not encode the annotated image as JPEG.")
    return encoded.tobytes()


def _write_video(target: Path, pictures: Iterator[np.ndarray], fps: float) -> None:
    """Write frames to a temporary .mp4 beside `target`, renamed into place once complete."""
    temp = target.with_name(f".{target.stem}.partial.mp4")
    writer = None
    try:
        for picture in pictures:
            if writer is None:
                height, width = picture.shape[:2]
                temp.parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                if not writer.isOpened():
                    raise DataError(f"OpenCV cannot write the video {target}; choose another output folder.")
            writer.write(picture)
        writer.release()
        os.replace(temp, target)
    finally:
        if writer is not None:
            writer.release()
        temp.unlink(missing_ok=True)
