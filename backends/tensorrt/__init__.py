"""TensorRT backend: readiness check (CPU), engine build and engine runner (NVIDIA GPU).

    check_readiness(model) -> [Finding]          # CPU: will TensorRT run this Q/DQ graph in INT8?
    compile_model(model, Path("m.engine"), precision="int8", batch_sizes=(1, 8))
    runner = load_runner("m.engine"); runner.predict(images); runner.benchmark(200, 20)

Modules: `readiness` (rules), `trt_ops` (op table), `settings` (settings -> builder plan, pure),
`batch` (static -> batch-dynamic graph), `build` (TensorRT build), `runner` (execution),
`inspector` (which layers ran INT8), `sidecar` (`<engine>.json`), `runtime` (lazy TensorRT/CUDA).
Nothing imports tensorrt or cuda until a build or run needs it, so everything but those two works
without a GPU, and they fail with one line (`NO_GPU_MESSAGE`).
"""

from __future__ import annotations

from pathlib import Path

from yolograph.backends.tensorrt.build import compile_model
from yolograph.backends.tensorrt.inspector import EngineLayer, Int8Report, int8_report, parse_engine_information
from yolograph.backends.tensorrt.readiness import Finding, check_readiness, format_findings
from yolograph.backends.tensorrt.runner import TrtRunner, load_runner
from yolograph.backends.tensorrt.runtime import NO_GPU_MESSAGE, gpu_available
from yolograph.backends.tensorrt.settings import BuildPlan, BuildSettings, plan_build
from yolograph.backends.tensorrt.sidecar import EngineSidecar, is_sidecar_engine, read_sidecar, sidecar_path


def is_engine(path: str | Path) -> bool:
    """True for a `.engine` file name or any file with a yolograph engine sidecar beside it."""
    return Path(path).suffix == ".engine" or is_sidecar_engine(path)


__all__ = [
    "NO_GPU_MESSAGE",
    "BuildPlan",
    "BuildSettings",
    "EngineLayer",
    "EngineSidecar",
    "Finding",
    "Int8Report",
    "TrtRunner",
    "check_readiness",
    "compile_model",
    "format_findings",
    "gpu_available",
    "int8_report",
    "is_engine",
    "load_runner",
    "parse_engine_information",
    "plan_build",
    "read_sidecar",
    "sidecar_path",
]
