"""Where the shared, read-only test and benchmark data lives."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "YOLOGRAPH_DATA"


def data_root() -> Path:
    """`$YOLOGRAPH_DATA`, else `../shared/data` beside the repository checkout."""
    override = os.environ.get(DATA_ENV_VAR)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def official_yolov8n() -> Path:
    return data_root() / "yolov8n.onnx"


def coco128() -> Path:
    return data_root() / "coco128"


def fixtures() -> Path:
    return data_root() / "fixtures"
