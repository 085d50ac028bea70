"""TensorRT backend (10.x and 11.x): readiness check (CPU), engine build and engine runner (NVIDIA GPU).

    check_readiness(model, "trt11") -> [Finding]  # CPU: will TensorRT build this graph as it says?
    compile_model(model, Path("m.engine"), precision="int8", batch_sizes=(1, 8))

TensorRT 10 builds weakly typed by default (builder flags pick FP16/INT8, as before); TensorRT 11, and
10.x with typing="strong", build strongly typed networks that take the precision from the graph:
`settings.precision_pipeline` names the passes a --precision needs (int8: insert-qdq{profile=trt} +
calibrate, fp16: to-fp16, best: both), and compile adds them when the graph lacks them.
    runner = load_runner("m.engine"); runner.predict(images); runner.benchmark(200, 20)

Modules: `readiness` (rules), `typing_rules` (strongly typed rules), `trt_ops` (op table), `settings` (settings -> builder plan, pure),
`batch` (static -> batch-dynamic graph), `build` (TensorRT build), `runner` (execution),
`inspector` (which layers ran INT8), `sidecar` (`<engine>.json`), `runtime` (lazy TensorRT/CUDA).
Nothing imports tensorrt or cuda until a build or run needs it, so everything but those two works
without a GPU, and they fail with one line (`NO_GPU_MESSAGE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from yolograph.runtime.backend import Backend, register_backend
from yolograph.backends.tensorrt.build import compile_model
from yolograph.backends.tensorrt.inspector import EngineLayer, Int8Report, int8_report, parse_engine_information
from yolograph.backends.tensorrt.readiness import Finding, check_readiness, format_findings
from yolograph.backends.tensorrt.runner import TrtRunner, load_runner
from yolograph.backends.tensorrt.runtime import NO_GPU_MESSAGE, gpu_available
from yolograph.backends.tensorrt.settings import BuildPlan, BuildSettings, plan_build, precision_pipeline
from yolograph.backends.tensorrt.sidecar import EngineSidecar, is_sidecar_engine, read_sidecar, sidecar_path


def is_engine(path: str | Path) -> bool:
    """True for a `.engine` file name or any file with a yolograph engine sidecar beside it."""
    return Path(path).suffix == ".engine" or is_sidecar_engine(path)


@dataclass(frozen=True)
class TensorRtOptions:
    precision: Literal["fp32", "fp16", "int8", "best"] = field(
        default="fp16", metadata={"help": "tensorrt precision (best: INT8 convs, FP16 elsewhere)"})
    typing: Literal["auto", "weak", "strong"] = field(
        default="auto", metadata={"help": "tensorrt network typing: auto = strongly typed on TensorRT 11, builder "
                                          "flags on 10; strong = precision from the graph on 10 too"})
    calibration_images: str | None = field(
        default=None, metadata={"help": "tensorrt strongly typed int8/best: images insert-qdq + calibrate use "
                                        "(first 32) when the graph has no Q/DQ yet"})
    workspace_mb: int = field(default=4096, metadata={"help": "tensorrt workspace limit"})
    batch: str = field(default="1", metadata={"help": "tensorrt optimization-profile batch sizes, e.g. 1,8"})
    timing_cache: str | None = field(default=None, metadata={"help": "tensorrt timing cache file, reused across builds"})

    def batch_sizes(self) -> tuple[int, ...]:
        try:
            sizes = tuple(int(b) for b in self.batch.split(",") if b.strip())
        except ValueError:
            sizes = ()
        if not sizes or min(sizes) < 1:
            raise ValueError(f"batch must be positive batch sizes separated by commas, e.g. 1,8, not {self.batch!r}")
        return sizes

    def __post_init__(self) -> None:
        self.batch_sizes()
        if self.workspace_mb < 1:
            raise ValueError(f"workspace_mb must be at least 1, not {self.workspace_mb}")


@register_backend("tensorrt")
class TensorRtBackend(Backend):
    """NVIDIA TensorRT 10/11 engines (explicit INT8 from Q/DQ, FP16, strongly typed); readiness runs on CPU."""

    Options = TensorRtOptions
    extra = "tensorrt"
    artifact_suffixes = (".engine",)

    def compile(self, model, output: Path, options: TensorRtOptions) -> Path:
        return compile_model(model, output, precision=options.precision, workspace_mb=options.workspace_mb,
                             batch_sizes=options.batch_sizes(),
                             timing_cache=Path(options.timing_cache) if options.timing_cache else None,
                             typing=options.typing, calibration_images=options.calibration_images)

    def load_runner(self, path: Path, *, threads: int = 0) -> TrtRunner:
        return load_runner(path)

    def is_artifact(self, path: Path) -> bool:
        return is_engine(path)


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
    "precision_pipeline",
    "read_sidecar",
    "sidecar_path",
]
