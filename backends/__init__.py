"""Built-in backends. ONNX Runtime is the everywhere-reference; TVM and TensorRT are optional.

Each backend module offers `compile_model(model, output, ...)` and `load_runner(path)`; a runner
has `run(feed)`, `predict(images)` (first output for one NCHW float tensor), `benchmark(runs,
warmup)` and `input_names`. This module routes a user's reference to the right one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolograph.errors import BackendError


def open_runner(reference: str | None, *, threads: int = 0, backend: str | None = None) -> tuple[Any, tuple[int, int]]:
    """A runner for a model file, built-in name, TensorRT engine or TVM artifact, and its image size."""
    path = Path(reference) if reference else None
    if backend == "tensorrt" or (backend is None and path is not None and path.suffix == ".engine"):
        from yolograph.backends import tensorrt

        runner = tensorrt.load_runner(path)
        return runner, _imgsz_of_runner(runner)
    if backend == "tvm" or (backend is None and path is not None and _is_tvm_artifact(path)):
        from yolograph.backends import tvm

        runner = tvm.load_runner(path)
        return runner, _imgsz_of_runner(runner)
    from yolograph.backends.ort import OrtOptions, OrtRunner
    from yolograph.frontends import load_model

    model = load_model(reference)
    return OrtRunner(model, OrtOptions(threads=threads)), model.facts.imgsz or (640, 640)


def _is_tvm_artifact(path: Path) -> bool:
    if path.suffix in (".onnx", ".pt", ".engine"):
        return False
    from yolograph.backends import tvm

    return tvm.is_artifact(path)


def _imgsz_of_runner(runner: Any) -> tuple[int, int]:
    imgsz = getattr(runner, "imgsz", None)
    return tuple(imgsz) if imgsz else (640, 640)


def compile_for_backend(backend: str, model: Any, output: Path, args: argparse.Namespace | None = None) -> Path:
    """Write `model` for `backend`: an .onnx file for ort, the backend's artifact otherwise."""
    if backend == "ort":
        from yolograph.ir.serialization import save_model

        if output.suffix != ".onnx":
            raise BackendError(f"The ort backend writes ONNX; name the output with .onnx, not {output.name!r}.")
        return save_model(model, output)
    if backend == "tvm":
        from yolograph.backends import tvm

        return tvm.compile_model(
            model, output,
            target=getattr(args, "target", None),
            tune_trials=getattr(args, "tune_trials", 0) or 0,
            tune_seconds=getattr(args, "tune_seconds", None),
            tuning_db=Path(args.tuning_db) if getattr(args, "tuning_db", None) else None,
            rpc=getattr(args, "rpc", None),
            layout=getattr(args, "layout", None),
        )
    if backend == "tensorrt":
        from yolograph.backends import tensorrt

        batches = tuple(int(b) for b in str(getattr(args, "batch", "1")).split(",") if b)
        return tensorrt.compile_model(
            model, output,
            precision=getattr(args, "precision", "fp16"),
            workspace_mb=getattr(args, "workspace_mb", 4096),
            batch_sizes=batches,
            timing_cache=Path(args.timing_cache) if getattr(args, "timing_cache", None) else None,
        )
    raise BackendError(f"Unknown backend {backend!r}; use ort, tvm or tensorrt.")
