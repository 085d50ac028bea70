"""Saving models: atomic (temp file + rename), never touching the input file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from yolograph.errors import ModelError
from yolograph.ir.model import Model


def save_model(model: Model, path: str | Path) -> Path:
    """Write `model` to `path` atomically; refuses to overwrite the file the model was read from."""
    path = Path(path)
    if model.source and Path(model.source).exists() and path.resolve() == Path(model.source).resolve():
        raise ModelError(f"Refusing to overwrite the input model {path}; choose another output path.")
    write_bytes_atomic(path, model.serialize())
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def check_saved(path: str | Path) -> None:
    """Validate a saved file with the ONNX checker (used by tests and `compile`)."""
    onnx.checker.check_model(str(path))
