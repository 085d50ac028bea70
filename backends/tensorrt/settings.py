"""Build settings -> the TensorRT builder configuration they mean, as plain data.

`plan_build` is pure (no TensorRT import): it validates the user's settings against the model and
returns a `BuildPlan` naming the builder flags to set and clear, the workspace pool limit, the
optimization profiles and the timing cache file. `build.apply_plan` is the only code that turns a
plan into TensorRT calls, so the mapping is tested on CPU and the GPU code stays a thin loop.

Two ways to say the precision, by TensorRT major (`resolve_typing`):

- strongly typed (TensorRT 11, the only way there; on 10.x with ``typing="strong"``): the network is
  created with STRONGLY_TYPED and takes every tensor's type from the graph; no precision flag is set.
  ``--precision`` names what the graph must carry, and `precision_pipeline` the passes that write it:
  ``int8`` = Q/DQ from insert-qdq{profile=trt} + calibrate, ``fp16`` = to-fp16, ``best`` = both
  (INT8 convs, float16 elsewhere), ``fp32`` = neither.
- weakly typed (TensorRT 10, ``typing="auto"`` or ``"weak"``): today's builder flags, below.

Precisions (TensorRT 10, weakly typed networks):

- ``fp32``: no reduced-precision flag, and TF32 cleared so Conv/MatMul really run in FP32.
- ``fp16``: ``BuilderFlag.FP16``: TensorRT picks FP16 or FP32 kernels per layer.
- ``int8`` (and ``best``): ``BuilderFlag.INT8`` + ``FP16``: explicit quantization from the graph's Q/DQ nodes
  (TensorRT requires the INT8 flag for Q/DQ networks); layers left in float may run in FP16.
  ``int8_fallback="fp32"`` keeps those layers in FP32 (INT8 flag only, TF32 cleared), which is what
  ONNX Runtime computes for an INT8 Q/DQ model and isolates the INT8 error in accuracy comparisons.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from yolograph.errors import BackendError
from yolograph.ir.model import TensorInfo

PRECISIONS = ("fp32", "fp16", "int8", "best")
INT8_FALLBACKS = ("fp16", "fp32")
TYPINGS = ("auto", "weak", "strong")
SUPPORTED_MAJORS = (10, 11)
PROFILING_VERBOSITY = "DETAILED"  # the engine inspector needs it to report per-layer precision


@dataclass(frozen=True)
class BuildSettings:
    """What the user asked for (CLI flags of `yolograph compile --backend tensorrt`)."""

    precision: str = "fp16"
    workspace_mb: int = 4096
    batch_sizes: tuple[int, ...] = (1,)
    timing_cache: Path | None = None  # None: the per-user default, see `default_timing_cache`
    int8_fallback: str = "fp16"
    typing: str = "auto"  # auto: strongly typed on TensorRT 11, builder flags on 10

    def to_json(self) -> dict:
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        data["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        return data


@dataclass(frozen=True)
class ProfileShape:
    """One input's min/opt/max shapes inside an optimization profile."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BuildPlan:
    """The builder configuration a `BuildSettings` means for one model."""

    set_flags: tuple[str, ...]  # names in tensorrt.BuilderFlag
    clear_flags: tuple[str, ...]
    workspace_bytes: int
    dynamic_batch: bool  # True: the ONNX batch dimension is made symbolic before parsing
    profiles: tuple[tuple[ProfileShape, ...], ...]  # one per batch size; empty for a static engine
    batch_sizes: tuple[int, ...]
    timing_cache: Path
    profiling_verbosity: str = PROFILING_VERBOSITY
    notes: tuple[str, ...] = field(default=())
    strongly_typed: bool = False
    network_flags: tuple[str, ...] = ()  # names in tensorrt.NetworkDefinitionCreationFlag
    tensorrt_major: int = 10

    @property
    def precision_mode(self) -> str:
        return "strongly typed (precision from the graph)" if self.strongly_typed else "builder flags"

    def profile_index(self, batch: int) -> int:
        """The optimization profile that runs `batch` (0 for a static engine)."""
        if batch not in self.batch_sizes:
            raise BackendError(f"The engine was built for batch sizes {list(self.batch_sizes)}, not {batch}; "
                               "rebuild with --batch including it.")
        return self.batch_sizes.index(batch) if self.profiles else 0

    def to_json(self) -> dict:
        return {
            "set_flags": list(self.set_flags),
            "clear_flags": list(self.clear_flags),
            "workspace_bytes": self.workspace_bytes,
            "dynamic_batch": self.dynamic_batch,
            "profiles": [[{"input": s.input, "min": list(s.min), "opt": list(s.opt), "max": list(s.max)}
                          for s in profile] for profile in self.profiles],
            "batch_sizes": list(self.batch_sizes),
            "timing_cache": str(self.timing_cache),
            "profiling_verbosity": self.profiling_verbosity,
            "strongly_typed": self.strongly_typed,
            "network_flags": list(self.network_flags),
            "tensorrt_major": self.tensorrt_major,
            "precision_mode": self.precision_mode,
        }


def plan_build(settings: BuildSettings, inputs: Sequence[TensorInfo], *, has_qdq: bool, has_fp16: bool = False,
               device_tag: str = "unknown-gpu", tensorrt_major: int = 10) -> BuildPlan:
    """Validate `settings` for a model with `inputs` and return the builder configuration.

    Raises BackendError for an unknown precision or typing, a non-positive workspace or batch size, and a
    graph whose precision is not the one asked for: weakly typed, INT8 without Q/DQ nodes (no implicit
    calibration here) and FP16/FP32 with them (TensorRT would still run the Q/DQ parts in INT8); strongly
    typed, any difference between --precision and what the graph carries (the message names the passes).
    """
    precision = settings.precision.lower()
    if precision not in PRECISIONS:
        raise BackendError(f"Unknown TensorRT precision {settings.precision!r}; use one of {', '.join(PRECISIONS)}.")
    if settings.int8_fallback not in INT8_FALLBACKS:
        raise BackendError(f"Unknown INT8 fallback precision {settings.int8_fallback!r}; use fp16 or fp32.")
    if settings.workspace_mb < 1:
        raise BackendError(f"The TensorRT workspace must be at least 1 MiB, not {settings.workspace_mb}.")
    strong = resolve_typing(settings.typing, tensorrt_major)
    if strong:
        have = graph_precision(has_qdq, has_fp16)
        if have != precision:
            raise BackendError(f"A strongly typed build takes its precision from the graph, which is {have}, not "
                               f"{precision}: {_precision_advice(precision, has_qdq, has_fp16)}")
    else:
        if precision in ("int8", "best") and not has_qdq:
            raise BackendError("INT8 needs a Q/DQ graph: add 'insert-qdq{profile=trt},calibrate' to the pipeline "
                               "(TensorRT's implicit INT8 calibration is not used).")
        if precision in ("fp32", "fp16") and has_qdq:
            raise BackendError(f"The model has Q/DQ nodes, so TensorRT would run them in INT8 whatever "
                               f"--precision {precision} says: build it with --precision int8, or drop insert-qdq.")
    batch_sizes = _batch_sizes(settings.batch_sizes)
    if not inputs:
        raise BackendError("The model has no inputs; TensorRT needs at least one.")
    static_batches = {info.shape[0] if info.shape else None for info in inputs}
    dynamic = batch_sizes != tuple(b for b in static_batches if b is not None) or len(static_batches) != 1
    set_flags, clear_flags = ((), ()) if strong else _precision_flags(precision, settings.int8_fallback)
    # TensorRT 11 networks are strongly typed whatever the flags; 10.x needs the creation flag.
    network_flags = ("STRONGLY_TYPED",) if strong and tensorrt_major < 11 else ()
    profiles: tuple[tuple[ProfileShape, ...], ...] = ()
    if dynamic:
        for info in inputs:
            if len(info.shape) < 1 or any(d <= 0 for d in info.shape[1:]):
                raise BackendError(f"Input {info.name} has shape {list(info.shape)}; batch profiles need a "
                                   "static shape after the batch dimension.")
        # One exact-shape profile per batch size: each batch gets kernels tuned for it.
        profiles = tuple(
            tuple(ProfileShape(info.name, (b, *info.shape[1:]), (b, *info.shape[1:]), (b, *info.shape[1:]))
                  for info in inputs)
            for b in batch_sizes
        )
    cache = settings.timing_cache or default_timing_cache(device_tag)
    return BuildPlan(set_flags, clear_flags, settings.workspace_mb * 1024 * 1024, dynamic, profiles, batch_sizes,
                     Path(cache), strongly_typed=strong, network_flags=network_flags, tensorrt_major=tensorrt_major)


def resolve_typing(typing: str, tensorrt_major: int) -> bool:
    """True for a strongly typed build: always on TensorRT 11, on 10.x only when asked for."""
    if typing not in TYPINGS:
        raise BackendError(f"Unknown TensorRT typing {typing!r}; use one of {', '.join(TYPINGS)}.")
    if tensorrt_major not in SUPPORTED_MAJORS:
        raise BackendError(f"TensorRT {tensorrt_major} is not supported; install TensorRT 10 or 11: "
                           "pip install 'yolograph[tensorrt]'.")
    if tensorrt_major >= 11:
        if typing == "weak":
            raise BackendError("TensorRT 11 has no weakly typed networks (no FP16/INT8 builder flags); use "
                               "--typing auto or strong and put the precision in the graph.")
        return True
    return typing == "strong"


def graph_precision(has_qdq: bool, has_fp16: bool) -> str:
    """The precision a graph carries: Q/DQ nodes mean int8, float16 tensors fp16, both best."""
    if has_qdq:
        return "best" if has_fp16 else "int8"
    return "fp16" if has_fp16 else "fp32"


def precision_pipeline(precision: str, *, has_qdq: bool = False, has_fp16: bool = False,
                       images: str | None = None) -> str:
    """The passes that make a graph carry `precision` for a strongly typed build ('' when it already does).

    INT8 needs calibration images (`images`, calibrated on their first 32 as the benchmarks do).
    Raises BackendError when the graph carries more than asked (a precision cannot be removed here).
    """
    if precision not in PRECISIONS:
        raise BackendError(f"Unknown TensorRT precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    want_qdq, want_fp16 = precision in ("int8", "best"), precision in ("fp16", "best")
    if (has_qdq and not want_qdq) or (has_fp16 and not want_fp16):
        raise BackendError(f"The graph is {graph_precision(has_qdq, has_fp16)}, more reduced than --precision "
                           f"{precision}; compile it from the float model.")
    passes = []
    if want_qdq and not has_qdq:
        if has_fp16:
            raise BackendError("Q/DQ goes in before to-fp16: run insert-qdq{profile=trt},calibrate on the float "
                               "model, then to-fp16.")
        if images is None:
            raise BackendError(f"--precision {precision} needs INT8 calibration: give --calibration-images DIR, or "
                               "add 'insert-qdq{profile=trt},calibrate{images=DIR}' to the pipeline.")
        passes.append(f"cleanup,insert-qdq{{profile=trt}},calibrate{{images={images},range=0:32}}")
    if want_fp16 and not has_fp16:
        passes.append("to-fp16")
    return ",".join(passes)


def _precision_advice(precision: str, has_qdq: bool, has_fp16: bool) -> str:
    try:
        passes = precision_pipeline(precision, has_qdq=has_qdq, has_fp16=has_fp16, images="DIR")
    except BackendError as exc:
        return str(exc)
    return f"add '{passes}' to the pipeline (or give --calibration-images for int8/best)."


def _precision_flags(precision: str, int8_fallback: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if precision == "fp32":
        return (), ("TF32",)
    if precision == "fp16":
        return ("FP16",), ()
    if int8_fallback == "fp16":
        return ("INT8", "FP16"), ()
    return ("INT8",), ("TF32",)


def _batch_sizes(values: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(int(v) for v in values)
    if not sizes:
        raise BackendError("Give at least one batch size, e.g. --batch 1 or --batch 1,8.")
    if any(b < 1 for b in sizes):
        raise BackendError(f"Batch sizes must be positive, not {list(sizes)}.")
    return tuple(sorted(set(sizes)))


def cache_dir() -> Path:
    """`$YOLOGRAPH_CACHE_DIR`, else `$XDG_CACHE_HOME/yolograph`, else `~/.cache/yolograph`."""
    if os.environ.get("YOLOGRAPH_CACHE_DIR"):
        return Path(os.environ["YOLOGRAPH_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "yolograph"


def default_timing_cache(device_tag: str) -> Path:
    """Per GPU and TensorRT version: a timing cache is only valid for the device that timed it."""
    return cache_dir() / "tensorrt" / f"timing-{slug(device_tag)}.cache"


def slug(text: str) -> str:
    """`NVIDIA H100 80GB HBM3` -> `nvidia-h100-80gb-hbm3` (file-name safe)."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"
