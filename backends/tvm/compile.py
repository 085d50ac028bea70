"""Compile the optimized ONNX IR with TVM into a deployable artifact.

Artifact = two files written atomically side by side:
  <output>        the shared library TVM exports (`Executable.export_library`; load with
                  `tvm.runtime.load_module` + `relax.VirtualMachine`),
  <output>.json   the sidecar: target, input/output names, shapes and dtypes, image size and
                  class names (for `eval`), layout, INT8 and tuning facts.
The library is written first and the sidecar last, so a sidecar always describes a complete library.

Pipeline: ONNX -> Relax (static shapes) -> DecomposeOpsForInference -> [INT8 rewrite] ->
[NHWC/HWIO, the CPU default] -> [fast_exp for sigmoid/softmax on CPU] -> [tuning] -> compile: the
tuning database's records first, then default schedules for the rest (dlight's rules on GPU, the
analytic schedules of cpu_schedules.py on CPU, which need no tuning to beat ONNX Runtime on
yolov8n; only kernels neither covers run as TVM's naive loops, and the compile says so).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from yolograph.backends.tvm.target import (
    import_tvm,
    is_gpu,
    parse_target,
    validate_target,
)

from yolograph.errors import BackendError
from yolograph.ir import metadata
from yolograph.ir.model import Model
from yolograph.ir.serialization import write_bytes_atomic

ARTIFACT_FORMAT = "yolograph-tvm-artifact"
ARTIFACT_VERSION = 1
LAYOUTS = ("NCHW", "NHWC")
# Warn about naive conv kernels when they hold this share of the FLOPs (yolov8n's DFL conv, 16 -> 1
# channels, is 0.01%: no warning for it).
NAIVE_WARNING_SHARE = 0.02


@dataclass(frozen=True)
class CompileOptions:
    target: dict[str, Any]
    tune_trials: int = 0
    tune_seconds: float | None = None
    tuning_db: Path | None = None
    rpc: str | None = None
    layout: str = "NCHW"
    int8: bool = False
    analytic: bool = True  # CPU kernels without records get the analytic schedules (else naive loops)
    precision: str = "fp32"  # or "bf16" (backends/tvm/bf16.py) ...
    bf16_kernels: str | None = None  # ... with "native" or "emulated" kernels

    @property
    def tunes(self) -> bool:
        return self.tune_trials > 0 or (self.tune_seconds is not None and self.tune_seconds > 0)


def sidecar_path(library: Path) -> Path:
    return library.with_name(library.name + ".json")


def resolve_options(model: Model, *, target, tune_trials, tune_seconds, tuning_db, rpc, layout, int8,
                    analytic: bool = True, precision: str = "fp32", bf16_emulate: bool = False) -> CompileOptions:
    """Check the user's choices against the model and fill in defaults (layout, INT8, tuning DB)."""
    spec = parse_target(target)
    if tune_trials < 0:
        raise BackendError(f"--tune-trials must be 0 or more, not {tune_trials}.")
    if tune_seconds is not None and tune_seconds <= 0:
        raise BackendError(f"--tune-seconds must be positive, not {tune_seconds}.")
    if layout is None:
        # CPU: NHWC, the layout of the analytic conv schedule (backends/tvm/cpu_schedules.py). GPU:
        # NCHW unless the model itself is NHWC (to-nhwc).
        nhwc_model = model.metadata.get(metadata.LAYOUT) == "NHWC"
        layout = "NHWC" if nhwc_model or spec["kind"] == "llvm" else "NCHW"
    layout = layout.upper()
    if layout not in LAYOUTS:
        raise BackendError(f"Unknown layout {layout!r}; TVM compiles conv2d as NCHW or NHWC.")
    has_qdq = any(n.op in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.nodes)
    if int8 is None:
        int8 = has_qdq
    elif int8 and not has_qdq:
        raise BackendError("INT8 was requested but the model has no QuantizeLinear/DequantizeLinear nodes; "
                           "run the quantization passes (insert-qdq, calibrate) first.")
    if rpc is not None and not (tune_trials or tune_seconds):
        raise BackendError("--rpc only sets where tuning candidates are measured; add --tune-trials or --tune-seconds.")
    from yolograph.backends.tvm.database import default_database_dir

    db = Path(tuning_db) if tuning_db is not None else default_database_dir()
    from yolograph.backends.tvm.bf16 import resolve_precision

    kernels = resolve_precision(precision, spec, validate_target(spec), emulate=bf16_emulate, int8=bool(int8))
    return CompileOptions(spec, tune_trials, tune_seconds, db, rpc, layout, bool(int8), analytic, precision, kernels)


def compile_model(model: Model, output: Path, *, target: str | None = None, tune_trials: int = 0,
                  tune_seconds: float | None = None, tuning_db: Path | None = None, rpc: str | None = None,
                  layout: str | None = None, int8: bool | None = None, analytic: bool = True,
                  precision: str = "fp32", bf16_emulate: bool = False) -> Path:
    """Compile `model` for `target` into `output` (shared library) + `output`.json; returns `output`."""
    tvm = import_tvm()
    output = Path(output)
    if output.suffix in (".onnx", ".pt", ".engine", ".json"):
        raise BackendError(f"The TVM backend writes a shared library; name the output like model.so, not {output.name!r}.")
    options = resolve_options(model, target=target, tune_trials=tune_trials, tune_seconds=tune_seconds,
                              tuning_db=tuning_db, rpc=rpc, layout=layout, int8=int8, analytic=analytic,
                              precision=precision, bf16_emulate=bf16_emulate)
    start = time.perf_counter()
    mod, facts = lower_to_relax(model, options)
    target_obj = validate_target(options.target)

    from yolograph.backends.tvm.coverage import coverage_of
    from yolograph.backends.tvm.database import database_dirs
    from yolograph.backends.tvm.tune import tune

    tune_report = None
    if options.tunes:
        tune_report = tune(mod, target_obj, options.tuning_db, trials=options.tune_trials,
                           seconds=options.tune_seconds, rpc=options.rpc, analytic=options.analytic)
    coverage = coverage_of(mod, target_obj, options.tuning_db, analytic=options.analytic)
    if coverage.naive_flop_share >= NAIVE_WARNING_SHARE and not is_gpu(options.target):
        _note(f"TVM: {coverage.naive} conv kernels ({coverage.naive_flop_share:.0%} of the FLOPs) have neither a "
              "tuning record nor an analytic schedule and run as naive loops, which are slow; "
              "tune with --tune-trials N (records are reused).")
    executable = build(mod, target_obj, options.tuning_db, cpu_rules=options.analytic)
    sidecar = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "library": output.name,
        "target": options.target,
        "device": "cuda" if options.target["kind"] in ("cuda", "nvptx") else
                  ("cpu" if not is_gpu(options.target) else options.target["kind"]),
        "inputs": [_info_json(i) for i in model.inputs],
        "outputs": [_info_json(o) for o in model.outputs],
        "imgsz": list(_imgsz(model)),
        "metadata": {k: v for k, v in model.metadata.items()
                     if k in ("names", "stride", "task", "imgsz", "description") or k.startswith("yolograph.")},
        "layout": options.layout,
        **facts,
        "analytic_schedules": options.analytic,
        "tuning": {
            "database": str(options.tuning_db),
            "databases_read": [str(p) for p in database_dirs(options.tuning_db, target_obj)
                               if (p / "database_workload.json").exists()],
            "tasks": coverage.total,
            "tuned_tasks": coverage.tuned,
            "analytic_conv_tasks": coverage.analytic,
            "naive_conv_tasks": coverage.naive,
            "naive_conv_flop_share": coverage.naive_flop_share,
            **(tune_report.to_json() if tune_report else {}),
        },
        "tvm_version": tvm.__version__,
    }
    export_atomic(executable, output)
    sidecar["compile_seconds"] = round(time.perf_counter() - start, 2)  # tuning and export included
    write_bytes_atomic(sidecar_path(output), json.dumps(sidecar, indent=2).encode())
    return output


def lower_to_relax(model: Model, options: CompileOptions):
    """ONNX -> Relax with inference decomposition, INT8 and layout rewrites; returns (mod, facts)."""
    tvm = import_tvm()
    from tvm import relax
    from yolograph.backends.tvm.relax_import import to_relax

    mod = to_relax(model)
    with tvm.target.Target(options.target):
        mod = tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
        ])(mod)  # constants are folded later by the build (and by the NHWC rewrite, which needs it)
    facts: dict[str, Any] = {}
    if options.int8:
        from yolograph.backends.tvm.int8 import rewrite_integer_conv2d

        mod, int8_stats = rewrite_integer_conv2d(mod)
        facts["int8"] = int8_stats
    else:
        facts["int8"] = {"enabled": False}
    if options.layout == "NHWC":
        from yolograph.backends.tvm.layout import convert_to_nhwc

        mod, layout_stats = convert_to_nhwc(mod)
        facts["layout_stats"] = layout_stats
        if options.int8 and options.target["kind"] == "llvm":  # tensorized integer kernels (x86)
            from yolograph.backends.tvm.int8_schedules import pack_integer_conv2d

            mod, facts["int8"]["kernels"] = pack_integer_conv2d(mod, tvm.target.Target(options.target))
    facts["precision"] = {"mode": "fp32"}
    if options.precision == "bf16":
        from yolograph.backends.tvm.bf16 import rewrite_bf16

        mod, facts["precision"] = rewrite_bf16(mod, options.bf16_kernels)
        if "note" in facts["precision"]:
            _note(f"TVM: --precision bf16 on {options.target.get('mcpu', 'this CPU')}: {facts['precision']['note']}.")
    if options.target["kind"] == "llvm" and options.target.get("fast-math-reassoc"):
        from yolograph.backends.tvm.fast_math import rewrite_fast_exp

        mod, facts["fast_exp"] = rewrite_fast_exp(mod)
    return mod, facts


def build(mod, target, database_dir: Path | None, *, cpu_rules: bool = True):
    """relax build: MetaSchedule records from `database_dir` first, default schedules for the rest.

    The stages are MetaSchedule's `compile_relax` (fuse exactly as task extraction does, so the
    database keys match, then apply the records), followed by dlight's rules on GPU or
    yolograph's analytic CPU schedules (backends/tvm/cpu_schedules.py) on CPU.
    """
    import tvm
    from tvm import relax
    from tvm.relax.transform import MetaScheduleApplyDatabase
    from yolograph.backends.tvm.coverage import fusion_passes
    from yolograph.backends.tvm.database import open_database

    database = open_database(database_dir, target, create=False)
    default_schedules = _default_schedules(target, cpu_rules)

    @tvm.transform.module_pass(opt_level=3)
    def _pipeline(mod, _ctx):
        mod = tvm.transform.Sequential(fusion_passes(target))(mod)
        mod = MetaScheduleApplyDatabase()(mod)
        if default_schedules is not None:
            mod = default_schedules(mod)
        return tvm.transform.Sequential(_lowering_passes(target))(mod)

    try:
        with target, database, tvm.transform.PassContext(opt_level=3):
            return relax.build(mod, target=target, relax_pipeline=_pipeline)
    except Exception as exc:  # noqa: BLE001 - TVM raises TVMError/InternalError with long traces
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"TVM failed to compile the model for {target}: {first}") from exc


def _lowering_passes(target) -> list:
    """Relax's dataflow-lowering and finalize passes for the target (the CPU lists as the fallback).

    TVM 0.27's relax.pipeline dispatch fails for llvm (cpu_generic does not re-export the lists).
    """
    from tvm.relax import pipeline
    from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

    try:
        return [*pipeline.dataflow_lower_passes(target), *pipeline.finalize_passes(target)]
    except (ValueError, AttributeError):
        return [*cpu_pipeline.dataflow_lower_passes(target), *cpu_pipeline.finalize_passes(target)]


def _default_schedules(target, cpu_rules: bool):
    """Schedules for kernels without tuning records: dlight's GPU rules, or the analytic CPU rules."""
    if is_gpu({"kind": target.kind.name}):
        from tvm.s_tir import dlight as dl

        return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                       dl.gpu.GeneralReduction(), dl.gpu.Fallback())
    if not cpu_rules:
        return None
    from yolograph.backends.tvm.cpu_schedules import apply_cpu_schedules
    from yolograph.backends.tvm.int8_schedules import packed_conv_rule

    return apply_cpu_schedules(packed_conv_rule())


def export_atomic(executable, output: Path) -> None:
    """export_library to a temp file beside `output`, then rename (never a half-written library)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".so", dir=output.parent)
    os.close(fd)
    try:
        try:
            executable.export_library(temp)
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"TVM could not export the compiled library ({first}); "
                               "a C compiler (gcc/clang) must be on PATH.") from exc
        os.replace(temp, output)
    finally:
        Path(temp).unlink(missing_ok=True)


def _info_json(info) -> dict[str, Any]:
    return {"name": info.name, "shape": [int(d) for d in info.shape], "dtype": np.dtype(info.dtype).name}


def _imgsz(model: Model) -> tuple[int, int]:
    shape = model.inputs[0].shape
    if len(shape) == 4:
        if model.metadata.get(metadata.INPUT_LAYOUT) == "NHWC":
            return int(shape[1]), int(shape[2])
        return int(shape[2]), int(shape[3])
    return (640, 640)


def _note(message: str) -> None:
    print(message, file=sys.stderr)
