"""Build settings -> the TensorRT builder configuration they mean, as plain data.

`plan_build` is pure (no TensorRT import): it validates the user's settings against the model and
returns a `BuildPlan` naming the builder flags to set and clear, the workspace pool limit, the
optimization profiles and the timing cache file. `build.apply_plan` is the only code that turns a
plan into TensorRT calls, so the mapping is tested on CPU and the GPU code stays a thin loop.

Precisions (TensorRT 10, weakly typed networks):

- ``fp32``: no reduced-precision flag, and TF32 cleared so Conv/MatMul really run in FP32.
- ``fp16``: ``BuilderFlag.FP16``: TensorRT picks FP16 or FP32 kernels per layer.
- ``int8``: ``BuilderFlag.INT8`` + ``FP16``: explicit quantization from the graph's Q/DQ nodes
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

PRECISIONS = ("fp32", "fp16", "int8")
INT8_FALLBACKS = ("fp16", "fp32")
PROFILING_VERBOSITY = "DETAILED"  # the engine inspector needs it to report per-layer precision


@dataclass(frozen=True)
class BuildSettings:
    """What the user asked for (CLI flags of `yolograph compile --backend tensorrt`)."""

    precision: str = "fp16"
    workspace_mb: int = 4096
    batch_sizes: tuple[int, ...] = (1,)
    timing_cache: Path | None = None  # None: the per-user default, see `default_timing_cache`
    int8_fallback: str = "fp16"

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
        }


def plan_build(settings: BuildSettings, inputs: Sequence[TensorInfo], *, has_qdq: bool,
               device_tag: str = "unknown-gpu") -> BuildPlan:
    """Validate `settings` for a model with `inputs` and return the builder configuration.

    Raises BackendError for an unknown precision, a non-positive workspace or batch size, INT8 on a
    graph without Q/DQ nodes (TensorRT 10 has no implicit calibration in this backend), and FP16/FP32
    on a graph with them (TensorRT would still run the Q/DQ parts in INT8, contrary to the request).
    """
    precision = settings.precision.lower()
    if precision not in PRECISIONS:
        raise BackendError(f"Unknown TensorRT precision {settings.precision!r}; use one of {', '.join(PRECISIONS)}.")
    if settings.int8_fallback not in INT8_FALLBACKS:
        raise BackendError(f"Unknown INT8 fallback precision {settings.int8_fallback!r}; use fp16 or fp32.")
    if settings.workspace_mb < 1:
        raise BackendError(f"The TensorRT workspace must be at least 1 MiB, not {settings.workspace_mb}.")
    if precision == "int8" and not has_qdq:
        raise BackendError("INT8 needs a Q/DQ graph: add 'insert-qdq{profile=trt},calibrate' to the pipeline "
                           "(TensorRT's implicit INT8 calibration is not used).")
    if precision != "int8" and has_qdq:
        raise BackendError(f"The model has Q/DQ nodes, so TensorRT would run them in INT8 whatever "
                           f"--precision {precision} says: build it with --precision int8, or drop insert-qdq.")
    batch_sizes = _batch_sizes(settings.batch_sizes)
    if not inputs:
        raise BackendError("The model has no inputs; TensorRT needs at least one.")
    static_batches = {info.shape[0] if info.shape else None for info in inputs}
    dynamic = batch_sizes != tuple(b for b in static_batches if b is not None) or len(static_batches) != 1
    set_flags, clear_flags = _precision_flags(precision, settings.int8_fallback)
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
                     Path(cache))


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
