"""Ultralytics .pt frontend: read a checkpoint without torch and lower it to the IR.

`load_checkpoint_model(path)` is what `yolograph.frontends.load_model` calls for `.pt` paths.
The checkpoint is read by a strict allowlist unpickler (`checkpoint.py`), so nothing in the
file executes. A stock YOLOv8 detect tree is checked against its topology and its weights handed
to the built-in builder (`lowering.py`); any other tree (YOLO11, YOLO26, the segment, pose, obb
and classify heads) is lowered by walking its layer records (`walker.py`, with `blocks.py` for
backbone/neck blocks, `heads.py` for heads and `emitter.py` for the torch primitives).
"""

from __future__ import annotations

from pathlib import Path

from yolograph.frontends.pt.checkpoint import (
    Checkpoint,
    ModuleRecord,
    UnsafeCheckpointError,
    read_checkpoint,
    state_dict,
)
from yolograph.ir.model import Model

__all__ = [
    "Checkpoint",
    "ModuleRecord",
    "UnsafeCheckpointError",
    "load_checkpoint_model",
    "read_checkpoint",
    "state_dict",
]


def load_checkpoint_model(path: str | Path) -> Model:
    """Read an ultralytics checkpoint (any supported task) and lower it to an unfused IR Model."""
    from yolograph.frontends.pt.lowering import lower_checkpoint

    return lower_checkpoint(read_checkpoint(path))
