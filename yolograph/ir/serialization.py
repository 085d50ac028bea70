"""Saving models and reports: atomic (temp file + rename), never touching the input file.

Every writer checks its path before writing (`check_output_path`), so a folder, a read-only
place or the input model itself is refused with an OutputError naming the fix, and a failure
while writing leaves nothing behind: no temp file, no half-written output.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from yolograph.errors import ModelError, OutputError
from yolograph.ir.model import Model


def save_model(model: Model, path: str | Path) -> Path:
    """Write `model` to `path` atomically; refuses to overwrite the file the model was read from."""
    path = Path(path)
    if model.source and Path(model.source).exists() and path.resolve() == Path(model.source).resolve():
        raise ModelError(f"Refusing to overwrite the input model {path}; choose another output path.")
    write_bytes_atomic(path, model.serialize())
    return path


def check_output_path(path: str | Path, what: str = "output") -> Path:
    """Raise OutputError unless `path` can be written as a file (its folder is created if missing)."""
    path = Path(path)
    if str(path) in ("", "."):
        raise OutputError(f"The {what} path is empty; give a file name.")
    if path.is_dir():
        raise OutputError(f"The {what} path {path} is an existing folder; give a file path, not a folder.")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"The {what} file {path} is read-only; choose another path or make it writable.")
    _check_folder_creatable(path.parent, what)
    return path


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """Raise OutputError unless `path` is, or can be created as, a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"The {what} {path} is an existing file; give a folder path.")
    _check_folder_creatable(path, what)
    return path


def _check_folder_creatable(folder: Path, what: str) -> None:
    existing = folder if str(folder) else Path(".")
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"Cannot write the {what} under {folder}: {existing} is a file, not a folder; choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write the {what} under {folder}: {existing} is not writable; choose another path.")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename: a crash never leaves a half-written file."""
    path = check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}; choose another output path.") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}; choose another output path.") from exc
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def check_saved(path: str | Path) -> None:
    """Validate a saved file with the ONNX checker (used by tests and `compile`)."""
    onnx.checker.check_model(str(path))
