"""TVM backend: compile the optimized ONNX IR into tuned kernels for a named target.

    compile_model(model, "model.so", target="llvm -mcpu=znver3 -num-cores=2", tune_trials=2000,
                  tuning_db=Path("tuning"))     # writes model.so + model.so.json
    runner = load_runner("model.so"); runner.predict(images); runner.benchmark(50, 5)

Importing this package does not import TVM; a missing TVM raises BackendError when used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from yolograph.runtime.backend import Backend, register_backend

if TYPE_CHECKING:
    from yolograph.backends.tvm.runner import TvmRunner
    from yolograph.ir.model import Model

__all__ = ["compile_model", "load_runner", "is_artifact"]


def compile_model(model: Model, output: Path, *, target: str | None = None, tune_trials: int = 0,
                  tune_seconds: float | None = None, tuning_db: Path | None = None, rpc: str | None = None,
                  layout: str | None = None, int8: bool | None = None, analytic: bool = True,
                  precision: str = "fp32", bf16_emulate: bool = False) -> Path:
    """Compile `model` with TVM; writes the shared library `output` and its sidecar `output`.json.

    target: 'llvm' (this CPU), 'llvm -mcpu=X -num-cores=N [-mtriple=...]', 'cuda -arch=sm_90' or a
    JSON dict. tune_trials / tune_seconds: MetaSchedule budget (0/None: no tuning). tuning_db:
    database folder (default $YOLOGRAPH_TVM_TUNING_DB or ~/.cache/yolograph/tvm-tuning), always
    read, written when tuning. rpc: 'tracker_host:port:key' to measure candidates on remote devices.
    layout: 'NCHW' or 'NHWC' (default NHWC on CPU and for to-nhwc models, else NCHW). int8: integer conv2d for QDQ
    models (default: on when the model has Q/DQ nodes). analytic: schedule CPU kernels that have no
    tuning record with the analytic rules (backends/tvm/cpu_schedules.py); False leaves them as TVM's
    naive loops (what the benchmark's "naive" rows measure). precision: 'fp32' or 'bf16' (conv/matmul on bf16
    operands with float32 accumulation, the decode float32; backends/tvm/bf16.py), which needs an AVX512_BF16 or
    AMX-BF16 target unless bf16_emulate (bf16 accuracy, float32 arithmetic: for measuring, not for speed).
    """
    from yolograph.backends.tvm.compile import compile_model as _compile

    return _compile(model, Path(output), target=target, tune_trials=tune_trials, tune_seconds=tune_seconds,
                    tuning_db=tuning_db, rpc=rpc, layout=layout, int8=int8, analytic=analytic,
                    precision=precision, bf16_emulate=bf16_emulate)


def load_runner(path: Path, threads: int | None = None) -> TvmRunner:
    """Load an artifact written by compile_model (the library path or its .json sidecar)."""
    from yolograph.backends.tvm.runner import load_runner as _load

    return _load(Path(path), threads=threads)


def is_artifact(path: Path) -> bool:
    """True when `path` is a TVM library with a yolograph sidecar beside it (or that sidecar)."""
    from yolograph.backends.tvm.runner import is_artifact as _is

    return _is(Path(path))


@dataclass(frozen=True)
class TvmOptions:
    # Named tvm_target (flag --tvm-target) because `compile --target` names a deployment target
    # (yolograph.targets); `--target 'llvm ...'` still works there, with a deprecation line.
    tvm_target: str | None = field(default=None, metadata={
        "help": "tvm: TVM target string, 'llvm -mcpu=... -num-cores=N' or 'cuda -arch=sm_90' (default: this CPU)"})
    tune_trials: int = field(default=0, metadata={
        "help": "tvm: tune: measure the analytic CPU schedules, then N MetaSchedule trials on the remaining "
                "kernels (0: no tuning; untuned CPU kernels get the analytic schedules)"})
    tune_seconds: float | None = field(default=None, metadata={"help": "tvm: tuning time budget in seconds"})
    tuning_db: str | None = field(default=None, metadata={"help": "tvm: tuning database folder, reused across compiles"})
    rpc: str | None = field(default=None, metadata={
        "help": "tvm: measure on remote devices through an RPC tracker host:port:key"})
    layout: Literal["NCHW", "NHWC"] | None = field(default=None, metadata={
        "help": "tvm: conv2d layout to compile (default NHWC on CPU)"})
    precision: Literal["fp32", "bf16"] = field(default="fp32", metadata={
        "help": "tvm: bf16: conv/matmul on bfloat16 with float32 accumulation, decode in float32 (CPU targets "
                "with AVX512_BF16 or AMX-BF16)"})
    bf16_emulate: bool = field(default=False, metadata={
        "help": "tvm: allow --precision bf16 on a target without bf16 instructions (bf16 accuracy, float32 speed)"})

    def __post_init__(self) -> None:
        if self.tune_trials < 0:
            raise ValueError(f"tune_trials must be 0 or more, not {self.tune_trials}")


@register_backend("tvm")
class TvmBackend(Backend):
    """Apache TVM (Relax): analytic CPU schedules, MetaSchedule tuning, integer conv2d, CUDA targets."""

    Options = TvmOptions
    extra = "tvm"

    def compile(self, model: Model, output: Path, options: TvmOptions) -> Path:
        return compile_model(model, output, target=options.tvm_target, tune_trials=options.tune_trials,
                             tune_seconds=options.tune_seconds,
                             tuning_db=Path(options.tuning_db) if options.tuning_db else None,
                             rpc=options.rpc, layout=options.layout, precision=options.precision,
                             bf16_emulate=options.bf16_emulate)

    def load_runner(self, path: Path, *, threads: int = 0) -> TvmRunner:
        return load_runner(path, threads=threads or None)

    def is_artifact(self, path: Path) -> bool:
        return is_artifact(path)
