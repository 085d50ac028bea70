"""Ultralytics-style augmentation of unlabeled images: mosaic, letterbox scale jitter, flips, HSV.

Distillation needs no labels (the teacher labels every augmented image), so the geometric transforms
never have to move boxes: a sample is built, the teacher and student both see it. The defaults are
Ultralytics' training hyper-parameters (hsv_h 0.015, hsv_s 0.7, hsv_v 0.4, scale 0.5, translate 0.1,
fliplr 0.5, mosaic 1.0), so 32 images yield many different views. Everything draws from one
`numpy.random.Generator`, so a seed fixes the stream of samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from yolograph.evaluation.preprocess import PAD_VALUE, letterbox


@dataclass(frozen=True)
class Augmentation:
    mosaic: float = 1.0  # probability of a 4-image mosaic
    scale: float = 0.5  # scale jitter: factor drawn from [1 - scale, 1 + scale]
    translate: float = 0.1  # shift, as a fraction of the image size
    fliplr: float = 0.5
    flipud: float = 0.0
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4

    @staticmethod
    def none() -> Augmentation:
        return Augmentation(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def augmented_sample(images: list[np.ndarray], imgsz: tuple[int, int], rng: np.random.Generator,
                     aug: Augmentation) -> np.ndarray:
    """One `[3, H, W]` float32 RGB sample in [0, 1] built from the BGR uint8 `images`."""
    height, width = imgsz
    if len(images) >= 4 and rng.random() < aug.mosaic:
        picks = rng.choice(len(images), size=4, replace=False)
        canvas = _mosaic([images[i] for i in picks], imgsz, rng)
        image = _affine(canvas, imgsz, rng, aug, center=(canvas.shape[1] / 2, canvas.shape[0] / 2))
    else:
        source = images[int(rng.integers(len(images)))]
        boxed, _ = letterbox(source, imgsz)
        image = _affine(boxed, imgsz, rng, aug, center=(width / 2, height / 2))
    if rng.random() < aug.fliplr:
        image = image[:, ::-1]
    if rng.random() < aug.flipud:
        image = image[::-1]
    image = _hsv(np.ascontiguousarray(image), rng, aug)
    return np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)).astype(np.float32) / np.float32(255.0)


def plain_sample(image: np.ndarray, imgsz: tuple[int, int]) -> np.ndarray:
    """The evaluation preprocessing of one BGR image, as `[3, H, W]` float32."""
    boxed, _ = letterbox(image, imgsz)
    return np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1)).astype(np.float32) / np.float32(255.0)


def _mosaic(images: list[np.ndarray], imgsz: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Four images around a random centre of a 2H x 2W grey canvas (each fit into H x W), as Ultralytics."""
    height, width = imgsz
    canvas = np.full((2 * height, 2 * width, 3), PAD_VALUE[0], dtype=np.uint8)
    yc = int(rng.uniform(height / 2, 1.5 * height))
    xc = int(rng.uniform(width / 2, 1.5 * width))
    for index, image in enumerate(images):
        ratio = min(height / image.shape[0], width / image.shape[1])
        h, w = max(1, round(image.shape[0] * ratio)), max(1, round(image.shape[1] * ratio))
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        if index == 0:  # top left
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif index == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * width), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif index == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * height, yc + h)
            x1b, y1b = w - (x2a - x1a), 0
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * width), min(2 * height, yc + h)
            x1b, y1b = 0, 0
        canvas[y1a:y2a, x1a:x2a] = image[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
    return canvas


def _affine(image: np.ndarray, imgsz: tuple[int, int], rng: np.random.Generator, aug: Augmentation,
            center: tuple[float, float]) -> np.ndarray:
    """Scale by a jittered factor about `center`, shift, and cut the H x W output (grey where empty)."""
    height, width = imgsz
    factor = rng.uniform(1 - aug.scale, 1 + aug.scale)
    # a mosaic canvas is twice the output: at factor 1 its centre H x W window is kept, as Ultralytics
    tx = width / 2 + rng.uniform(-aug.translate, aug.translate) * width
    ty = height / 2 + rng.uniform(-aug.translate, aug.translate) * height
    matrix = np.array([[factor, 0.0, tx - factor * center[0]], [0.0, factor, ty - factor * center[1]]])
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=PAD_VALUE)


def _hsv(image: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Random hue/saturation/value gains through lookup tables (Ultralytics' augment_hsv)."""
    if not (aug.hsv_h or aug.hsv_s or aug.hsv_v):
        return image
    gains = rng.uniform(-1, 1, 3) * [aug.hsv_h, aug.hsv_s, aug.hsv_v] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=gains.dtype)
    lut_hue = ((x * gains[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(merged, cv2.COLOR_HSV2BGR)
