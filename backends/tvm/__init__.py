"""TVM backend: compile the optimized ONNX IR into tuned kernels for a named target.

    compile_model(model, "model.so", target="llvm -mcpu=znver3 -num-cores=2", tune_trials=2000,
                  tuning_db=Path("tuning"))     # writes model.so + model.so.json
    runner = load_runner("model.so"); runner.predict(images); runner.benchmark(50, 5)

Importing this package does not import TVM; a missing TVM raises BackendError when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from yolograph.backends.tvm.runner import TvmRunner
    from yolograph.ir.model import Model

__all__ = ["compile_model", "load_runner", "is_artifact"]


def compile_model(model: Model, output: Path, *, target: str | None = None, tune_trials: int = 0,
                  tune_seconds: float | None = None, tuning_db: Path | None = None, rpc: str | None = None,
                  layout: str | None = None, int8: bool | None = None, analytic: bool = True) -> Path:
    """Compile `model` with TVM; writes the shared library `output` and its sidecar `output`.json.

    target: 'llvm' (this CPU), 'llvm -mcpu=X -num-cores=N [-mtriple=...]', 'cuda -arch=sm_90' or a
    JSON dict. tune_trials / tune_seconds: MetaSchedule budget (0/None: no tuning). tuning_db:
    database folder (default $YOLOGRAPH_TVM_TUNING_DB or ~/.cache/yolograph/tvm-tuning), always
    read, written when tuning. rpc: 'tracker_host:port:key' to measure candidates on remote devices.
    layout: 'NCHW' or 'NHWC' (default NHWC on CPU and for to-nhwc models, else NCHW). int8: integer conv2d for QDQ
    models (default: on when the model has Q/DQ nodes). analytic: schedule CPU kernels that have no
    tuning record with the analytic rules (backends/tvm/cpu_schedules.py); False leaves them as TVM's
    naive loops (what the benchmark's "naive" rows measure).
    """
    from yolograph.backends.tvm.compile import compile_model as _compile

    return _compile(model, Path(output), target=target, tune_trials=tune_trials, tune_seconds=tune_seconds,
                    tuning_db=tuning_db, rpc=rpc, layout=layout, int8=int8, analytic=analytic)


def load_runner(path: Path, threads: int | None = None) -> TvmRunner:
    """Load an artifact written by compile_model (the library path or its .json sidecar)."""
    from yolograph.backends.tvm.runner import load_runner as _load

    return _load(Path(path), threads=threads)


def is_artifact(path: Path) -> bool:
    """True when `path` is a TVM library with a yolograph sidecar beside it (or that sidecar)."""
    from yolograph.backends.tvm.runner import is_artifact as _is

    return _is(Path(path))
