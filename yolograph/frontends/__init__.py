"""Frontends: everything that turns a user's model reference into the IR.

`load_model` is the one entry point: a path to an .onnx or ultralytics .pt file, a built-in
architecture name (`yolov8n` ... `yolov8x`), or None for the built-in yolov8n. Every model it returns
has passed `yolograph.ir.sanity.check_model` (finite weights, a 4-D image input).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from yolograph.errors import ModelError
from yolograph.ir.model import Model

BUILTIN_PATTERN = re.compile(r"^yolov8([nsmlx])(?:-(\d+))?$")
DEFAULT_MODEL = "yolov8n"


def load_model(source: str | Path | None = None, *, input_shape: Sequence[int] | None = None) -> Model:
    """Load a model: None or 'yolov8n'-style names build the architecture, else read the file.

    input_shape: the static input shape (e.g. (1, 3, 640, 640)) a dynamic-shape .onnx is fixed to.
    Raises ModelError when it cannot be read or fails the sanity checks (yolograph.ir.sanity).
    """
    from yolograph.ir.sanity import check_model

    model = _load(source, input_shape)
    check_model(model, name=str(source) if source is not None else None)
    return model


def _load(source: str | Path | None, input_shape: Sequence[int] | None = None) -> Model:
    reference = str(source) if source is not None else DEFAULT_MODEL
    if input_shape is not None and not reference.lower().endswith(".onnx"):
        raise ModelError(
            f"--input-shape fixes a dynamic-shape .onnx file; {reference} has a fixed input size. Drop the option."
        )
    match = BUILTIN_PATTERN.match(reference)
    if match and not Path(reference).exists():
        from yolograph.frontends.builder import build_builtin

        return build_builtin(scale=match.group(1), num_classes=int(match.group(2) or 80))
    path = Path(reference)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from yolograph.frontends.onnx_file import load_onnx

        return load_onnx(path, input_shape=input_shape)
    if suffix == ".pt":
        from yolograph.frontends.pt import load_checkpoint_model

        return load_checkpoint_model(path)
    if not path.exists():
        raise ModelError(
            f"Model {reference!r} does not exist; give an .onnx or .pt file, or a built-in name "
            "(yolov8n, yolov8s, yolov8m, yolov8l, yolov8x; 'yolov8s-3' for 3 classes)."
        )
    raise ModelError(f"{reference} has an unsupported file type {suffix!r}; yolograph reads .onnx and .pt files.")
