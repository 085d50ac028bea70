"""Model metadata: every key yolograph writes into an ONNX model's metadata_props, and the readers of
the keys Ultralytics exports carry. One place, so a key is spelled once and parsed once.
"""

from __future__ import annotations

import ast
from typing import Any

# Written by yolograph's passes (read back by later passes, backends and runners).
QDQ_PROFILE = "yolograph.qdq_profile"  # insert-qdq: the target profile whose rules placed Q/DQ
QDQ_UNCALIBRATED = "yolograph.qdq_uncalibrated"  # insert-qdq until calibrate: scales are placeholders
LAYOUT = "yolograph.layout"  # to-nhwc: the internal layout
INPUT_LAYOUT = "yolograph.input_layout"  # to-nhwc{io}: NCHW or NHWC graph input
INPUT_DTYPE = "yolograph.input_dtype"  # to-nhwc{input=uint8}: float32 or uint8 pixels
INPUT_CHANNELS = "yolograph.input_channels"  # to-nhwc{channels=bgr}: rgb or bgr
INPUT_RANGE = "yolograph.input_range"  # what the input pixels span (1 or 255)
PRECISION = "yolograph.precision"  # to-fp16: the float precision of the graph's body
PIPELINE = "yolograph.pipeline"  # the pipeline text that produced the model

# Written by Ultralytics' exporter.
TASK = "task"
NAMES = "names"
IMGSZ = "imgsz"
STRIDE = "stride"
BATCH = "batch"
KPT_SHAPE = "kpt_shape"


def literal(text: str | None) -> Any:
    """A Python literal as Ultralytics writes metadata values (`{0: 'person'}`, `[640, 640]`); None if unreadable."""
    if not text:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def parse_names(text: str | None) -> dict[int, str]:
    """``"{0: 'person', ...}"`` (or a list) -> {0: "person", ...}; {} when absent or unreadable."""
    value = literal(text)
    if isinstance(value, dict):
        try:
            return {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            return {}
    if isinstance(value, (list, tuple)):
        return dict(enumerate(map(str, value)))
    return {}


def parse_imgsz(text: str | None) -> tuple[int, int] | None:
    """``"[640, 640]"`` or ``"640"`` -> (640, 640); None when absent or unreadable."""
    value = literal(text)
    if isinstance(value, int) and value > 0:
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return (int(value[0]), int(value[1]))
    return None


def parse_kpt_shape(text: str | None) -> tuple[int, int] | None:
    """``"[17, 3]"`` -> (17, 3) (keypoints, values per keypoint: 2 or 3); None when absent or unreadable."""
    value = literal(text)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        if value[1] in (2, 3):
            return int(value[0]), int(value[1])
    return None
