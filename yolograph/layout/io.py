"""Feeding a model whose input `to-nhwc` changed, from its metadata alone.

Keys (written by the to-nhwc pass; absent keys mean the ONNX default NCHW float RGB 0-1 input):
  yolograph.input_layout    "NHWC" | "NCHW"
  yolograph.input_dtype     "uint8" | "float32"
  yolograph.input_channels  "RGB" | "BGR"
  yolograph.input_range     "0-255" | "0-1"
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from yolograph.ir.metadata import INPUT_CHANNELS as INPUT_CHANNELS_KEY
from yolograph.ir.metadata import INPUT_DTYPE as INPUT_DTYPE_KEY
from yolograph.ir.metadata import INPUT_LAYOUT as INPUT_LAYOUT_KEY
from yolograph.ir.metadata import INPUT_RANGE as INPUT_RANGE_KEY  # noqa: F401  (read by to-nhwc)


def input_from_nchw(metadata: Mapping[str, str], images: np.ndarray) -> np.ndarray:
    """An NCHW float32 RGB batch in [0, 1] (what evaluation's preprocessing makes) as the model takes it."""
    array = np.asarray(images)
    if metadata.get(INPUT_CHANNELS_KEY, "RGB") == "BGR":
        array = array[:, ::-1]
    if metadata.get(INPUT_LAYOUT_KEY, "NCHW") == "NHWC":
        array = np.transpose(array, (0, 2, 3, 1))
    if metadata.get(INPUT_DTYPE_KEY, "float32") == "uint8":
        return np.clip(np.rint(array.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array, dtype=np.float32)


def input_from_frame(metadata: Mapping[str, str], frame_bgr: np.ndarray) -> np.ndarray:
    """A letterboxed HxWx3 uint8 BGR frame (cv2) as the model takes it: untouched for uint8/NHWC/BGR models."""
    if (metadata.get(INPUT_LAYOUT_KEY) == "NHWC" and metadata.get(INPUT_DTYPE_KEY) == "uint8"
            and metadata.get(INPUT_CHANNELS_KEY) == "BGR"):
        return frame_bgr[None]
    rgb = frame_bgr[:, :, ::-1].transpose(2, 0, 1)[None]
    return input_from_nchw(metadata, np.ascontiguousarray(rgb).astype(np.float32) / np.float32(255.0))
