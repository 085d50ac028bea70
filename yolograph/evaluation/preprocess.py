"""Letterbox preprocessing, identical to Ultralytics ``LetterBox(auto=False, scaleup=True, center=True)``.

This is what Ultralytics does before running an exported model at its fixed export size: read BGR
with OpenCV, scale by ``r = min(H/h, W/w)`` with bilinear ``cv2.resize``, pad to ``H x W`` with grey
114 split evenly (the ``round(d -/+ 0.1)`` rule puts an odd pixel at the bottom/right), then RGB,
CHW, float32 / 255 and a batch dimension. The same steps, in the same order, give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from yolograph.errors import DataError

PAD_VALUE = (114, 114, 114)


@dataclass(frozen=True)
class LetterboxGeometry:
    """How an original image was placed in the network input, to map boxes back.

    ``input = original * ratio + (pad_left, pad_top)``.
    """

    ratio: float
    pad_left: int
    pad_top: int
    original_shape: tuple[int, int]  # (height, width) of the image on disk
    input_shape: tuple[int, int]  # (height, width) of the network input


def normalize_imgsz(imgsz: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``640`` -> ``(640, 640)``; ``(h, w)`` stays; anything else is a DataError."""
    size = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise DataError(f"The image size {imgsz!r} is not a positive int or (height, width) pair; use e.g. 640.")
    return int(size[0]), int(size[1])


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The image as an ``HxWx3`` uint8 BGR array (cv2.imread), or a DataError naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        if not Path(path).is_file():
            raise DataError(f"The image {path} does not exist; check the dataset path.")
        raise DataError(f"The image {path} cannot be decoded; replace or remove the corrupt file.")
    return image


def letterbox(image_bgr: np.ndarray, imgsz: int | tuple[int, int]) -> tuple[np.ndarray, LetterboxGeometry]:
    """Resize keeping aspect ratio and pad to `imgsz`; returns the padded HWC BGR image and its geometry."""
    height, width = normalize_imgsz(imgsz)
    h0, w0 = image_bgr.shape[:2]
    ratio = min(height / h0, width / w0)
    new_w, new_h = int(round(w0 * ratio)), int(round(h0 * ratio))
    dw, dh = (width - new_w) / 2, (height - new_h) / 2
    if (w0, h0) != (new_w, new_h):
        image_bgr = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    padded = cv2.copyMakeBorder(image_bgr, top, bottom, left, right, cv2.BORDER_CONSTANT, value=PAD_VALUE)
    geometry = LetterboxGeometry(ratio, left, top, (h0, w0), (height, width))
    return padded, geometry


def to_input_tensor(image_bgr: np.ndarray) -> np.ndarray:
    """HWC uint8 BGR -> ``[1, 3, H, W]`` float32 RGB in 0..1 (contiguous)."""
    chw_rgb = image_bgr[:, :, ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(chw_rgb[None]).astype(np.float32) / np.float32(255.0)


def preprocess_image(path: str | os.PathLike[str], imgsz: int | tuple[int, int]) -> tuple[np.ndarray, LetterboxGeometry]:
    """Read and letterbox one image: the ``[1, 3, H, W]`` float32 tensor and its geometry."""
    padded, geometry = letterbox(read_image(path), imgsz)
    return to_input_tensor(padded), geometry


def iter_image_tensors(paths: Iterable[str | os.PathLike[str]], imgsz: int | tuple[int, int]) -> Iterator[np.ndarray]:
    """Yield the preprocessed ``[1, 3, H, W]`` float32 tensor of each image, in order (lazily, one at a time).

    This is the input both evaluation and calibration feed a model: calibration on images 0-31 sees
    exactly the tensors evaluation would.
    """
    for path in paths:
        tensor, _ = preprocess_image(path, imgsz)
        yield tensor
