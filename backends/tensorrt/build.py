"""Build a TensorRT engine from the IR: plan on CPU, then parse + configure + build on the GPU.

Order of work, cheapest refusal first: settings are validated (`settings.plan_build`), an INT8 or
strongly typed build runs the readiness check (target trt, or trt11 on TensorRT 11) and refuses on
errors, and only then is TensorRT used; without it (or without a GPU) the build fails with one line.
A strongly typed build (TensorRT 11; 10.x with typing="strong") whose graph does not carry --precision
yet gets the passes that write it (`settings.precision_pipeline`: to-fp16, and insert-qdq{profile=trt}
+ calibrate on `calibration_images` for int8/best), verified, after the GPU check. The ONNX graph is made batch-dynamic when the
requested batch sizes need optimization profiles (checked on ONNX Runtime first). The timing cache
is loaded before and saved after every build, so rebuilding on the same GPU skips kernel timing.
The engine and its sidecar are written atomically; the input model is never modified.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from pathlib import Path
from typing import Any

from yolograph.backends.tensorrt.batch import check_batch_dynamic, make_batch_dynamic
from yolograph.backends.tensorrt.inspector import int8_report, parse_engine_information
from yolograph.backends.tensorrt.readiness import check_readiness
from yolograph.backends.tensorrt.runtime import (
    attach_context,
    check,
    compute_capability,
    device_name,
    installed_major,
    require_gpu,
    version_major,
)
from yolograph.backends.tensorrt.settings import BuildPlan, BuildSettings, plan_build, precision_pipeline, resolve_typing
from yolograph.backends.tensorrt.typing_rules import has_float16
from yolograph.backends.tensorrt.sidecar import EngineSidecar, TensorSpec, sha256_file, write_sidecar
from yolograph.errors import BackendError
from yolograph.ir.model import Model
from yolograph.ir.serialization import write_bytes_atomic

ENGINE_SUFFIX = ".engine"


def has_qdq(model: Model) -> bool:
    return any(n.op in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.nodes)


def validate_for_build(model: Model, output: Path, settings: BuildSettings,
                       tensorrt_major: int = 10) -> tuple[BuildPlan, dict]:
    """All CPU-side checks of a build: output name, settings, and (INT8 / strongly typed) readiness.

    Returns the provisional plan and a readiness summary; raises BackendError on a refusal.
    """
    _check_output(output)
    plan = plan_build(settings, model.inputs, has_qdq=has_qdq(model), has_fp16=has_float16(model),
                      tensorrt_major=tensorrt_major)
    readiness: dict[str, Any] = {"checked": False}
    if settings.precision in ("int8", "best") or plan.strongly_typed:
        target = "trt11" if tensorrt_major >= 11 else "trt"
        findings = check_readiness(model, target)
        errors = [f for f in findings if f.severity == "error"]
        readiness = {"checked": True, "target": target, "errors": len(errors), "warnings": len(findings) - len(errors),
                     "codes": dict(Counter(f.code for f in findings))}
        if errors:
            graph = "Q/DQ graph" if has_qdq(model) else "graph"
            raise BackendError(f"The {graph} is not TensorRT-ready ({len(errors)} error(s); first: {errors[0]}); "
                               f"run `yolograph inspect MODEL --target {target}` for every finding.")
    return plan, readiness


def _check_output(output: Path) -> None:
    if output.suffix != ENGINE_SUFFIX:
        raise BackendError(f"Name the TensorRT engine with {ENGINE_SUFFIX}, not {output.name!r} (e.g. model.engine).")


def compile_model(model: Model, output: Path, *, precision: str = "fp16", workspace_mb: int = 4096,
                  batch_sizes: tuple[int, ...] = (1,), timing_cache: Path | None = None,
                  int8_fallback: str = "fp16", typing: str = "auto", calibration_images: str | None = None) -> Path:
    """Build `model` into a TensorRT engine at `output` (+ `<output>.json` sidecar); returns `output`."""
    output = Path(output)
    settings = BuildSettings(precision=precision.lower(), workspace_mb=workspace_mb, batch_sizes=tuple(batch_sizes),
                             timing_cache=Path(timing_cache) if timing_cache else None, int8_fallback=int8_fallback,
                             typing=typing)
    _check_output(output)
    major = installed_major() or 10  # without TensorRT the GPU check below refuses; validate as for 10
    added = ""
    if resolve_typing(settings.typing, major):
        added = precision_pipeline(settings.precision, has_qdq=has_qdq(model), has_fp16=has_float16(model),
                                   images=calibration_images)
    if not added:
        validate_for_build(model, output, settings, major)
    trt, cudart = require_gpu()
    major = version_major(trt.__version__)
    if added:
        from yolograph.pipeline import run_pipeline

        model, _ = run_pipeline(model, added, verify=True)  # a copy: the input model is never modified
    _, readiness = validate_for_build(model, output, settings, major)
    device = device_name(cudart)
    plan = plan_build(settings, model.inputs, has_qdq=has_qdq(model), has_fp16=has_float16(model),
                      device_tag=f"{device}-trt{trt.__version__}", tensorrt_major=major)
    proto = make_batch_dynamic(model) if plan.dynamic_batch else model.to_onnx()
    if plan.dynamic_batch:
        check_batch_dynamic(model, proto)
    engine_bytes = _build(trt, proto.SerializeToString(), plan)
    write_bytes_atomic(output, engine_bytes)
    layers_json = _engine_information(trt, cudart, engine_bytes, plan)
    layers = parse_engine_information(layers_json)
    report = int8_report(model, layers) if settings.precision in ("int8", "best") else None
    batch_dim = -1 if plan.dynamic_batch else None
    sidecar = EngineSidecar(
        engine_sha256=sha256_file(output),
        engine_bytes=output.stat().st_size,
        inputs=tuple(_spec(t, batch_dim) for t in model.inputs),
        outputs=tuple(_spec(t, batch_dim) for t in model.outputs),
        batch_sizes=plan.batch_sizes,
        precision=settings.precision,
        build={"settings": settings.to_json(), "plan": plan.to_json(), "readiness": readiness,
               "added_passes": added},
        tensorrt_version=str(trt.__version__),
        device=f"{device} (sm {compute_capability(cudart)})",
        model=_model_info(model),
        int8_report=report.to_json() if report else {"layer_types": dict(Counter(l.compute_type for l in layers))},
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        tensorrt_major=major,
        precision_mode=plan.precision_mode,
    )
    write_sidecar(output, sidecar)
    return output


def apply_plan(plan: BuildPlan, trt: Any, builder: Any, config: Any) -> None:
    """Set `plan` on a TensorRT IBuilderConfig: flags, workspace pool, verbosity, profiles."""
    for name in plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, plan.profiling_verbosity)
    for shapes in plan.profiles:
        profile = builder.create_optimization_profile()
        for shape in shapes:
            profile.set_shape(shape.input, shape.min, shape.opt, shape.max)
        config.add_optimization_profile(profile)


def load_timing_cache(config: Any, path: Path) -> Any:
    """Attach the timing cache stored at `path` (an empty one when absent) to `config`."""
    data = path.read_bytes() if path.exists() else b""
    cache = config.create_timing_cache(data)
    # ignore_mismatch=False: a cache timed on another GPU or TensorRT version is not trusted.
    if not config.set_timing_cache(cache, False):
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def save_timing_cache(config: Any, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is not None:
        write_bytes_atomic(path, bytes(memoryview(cache.serialize())))


def _build(trt: Any, onnx_bytes: bytes, plan: BuildPlan) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f"TensorRT cannot parse the graph ({errors[0] if errors else 'no detail'}); run "
                           "`yolograph inspect MODEL --target trt`.")
    config = builder.create_builder_config()
    apply_plan(plan, trt, builder, config)
    load_timing_cache(config, plan.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError("TensorRT failed to build the engine (see its log above); try a larger --workspace-mb "
                           "or another precision.")
    save_timing_cache(config, plan.timing_cache)
    return bytes(memoryview(serialized))


def network_flags(trt: Any, plan: BuildPlan) -> int:
    """The create_network flag bits of `plan` (0: explicit batch, TensorRT 10's only mode; 11's default is strong)."""
    bits = 0
    for name in plan.network_flags:
        flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), name, None)
        if flag is None:
            raise BackendError(f"This TensorRT {trt.__version__} has no {name} networks; use --typing auto (builder "
                               "flags) or install a TensorRT that has them.")
        bits |= 1 << int(flag)
    return bits


def _engine_information(trt: Any, cudart: Any, engine_bytes: bytes, plan: BuildPlan) -> str:
    """The engine inspector's JSON; with a context set to profile 0's shapes so formats are concrete."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise BackendError("TensorRT cannot load the engine it just built; check the GPU driver.")
    inspector = engine.create_engine_inspector()
    context = engine.create_execution_context()
    if plan.profiles:
        stream = check(cudart, cudart.cudaStreamCreate())
        context.set_optimization_profile_async(0, int(stream))
        for shape in plan.profiles[0]:
            context.set_input_shape(shape.input, shape.opt)
        check(cudart, cudart.cudaStreamSynchronize(stream))
        check(cudart, cudart.cudaStreamDestroy(stream))
    attach_context(inspector, context)
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


def _spec(info, batch_dim: int | None) -> TensorSpec:
    shape = tuple(info.shape)
    if batch_dim is not None and shape:
        shape = (batch_dim, *shape[1:])
    return TensorSpec(info.name, shape, str(info.dtype))


def _model_info(model: Model) -> dict:
    info: dict[str, Any] = {"source": model.source}
    try:
        facts = model.facts
    except Exception:  # not a YOLO graph: the engine still runs, evaluation needs the image size only
        facts = None
    if facts is not None:
        info.update(task=facts.task, stride=facts.stride, imgsz=list(facts.imgsz) if facts.imgsz else None,
                    names={str(k): v for k, v in facts.names.items()})
    return info
