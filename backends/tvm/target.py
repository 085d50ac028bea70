"""Target strings -> TVM's dict target form.

TVM 0.27 no longer parses CLI target strings ("llvm -mcpu=znver3"); it takes dicts such as
{"kind": "llvm", "mcpu": "znver3", "num-cores": 2}. Users still type the familiar string, so
this module parses it, fills in the host CPU for a bare "llvm" (TVM's default, a generic x86-64,
would compile without AVX2/AVX-512), and validates the result by constructing the Target.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

from yolograph.errors import BackendError
from yolograph.runtime.host import cpu_flags

# LLVM float flags yolograph turns on for CPU targets unless the target sets them: FMA contraction
# and reassociation let LLVM vectorize reductions (untuned yolov8n: 2.9x faster), and change
# results only at float-rounding level (outputs stay within 1e-6 relative of ONNX Runtime).
# No nnan/ninf: those would let LLVM drop NaN/Inf handling. Disable with -fast-math-reassoc=false.
CPU_FAST_MATH = {"fast-math-contract": True, "fast-math-reassoc": True, "fast-math-nsz": True}

# Attributes TVM types as arrays of strings; written comma-separated on the command line.
_LIST_ATTRS = frozenset({"mattr", "keys", "libs", "device_features"})
_GPU_KINDS = frozenset({"cuda", "rocm", "vulkan", "metal", "opencl", "nvptx", "webgpu"})


def parse_target(text: str | dict | None) -> dict[str, Any]:
    """'llvm -mcpu=X -num-cores=N' / 'cuda -arch=sm_90' / a JSON dict -> TVM target dict.

    None means the host CPU: {"kind": "llvm", "mcpu": <LLVM's name for this CPU>, "num-cores": <cores>}.
    llvm targets get CPU_FAST_MATH flags unless they set them.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        text = "llvm"
    if isinstance(text, dict):
        spec = dict(text)
    elif text.lstrip().startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BackendError(f"The TVM target {text!r} is not valid JSON ({exc.msg}); "
                               "write it as 'llvm -mcpu=... -num-cores=N' or a JSON object.") from exc
    else:
        spec = _parse_cli(text)
    if "kind" not in spec:
        raise BackendError(f"The TVM target {text!r} names no kind; start it with llvm or cuda.")
    if spec["kind"] == "llvm":
        _fill_host_defaults(spec)
        for flag, value in CPU_FAST_MATH.items():
            spec.setdefault(flag, value)
    validate_target(spec)
    return spec


def _parse_cli(text: str) -> dict[str, Any]:
    tokens = shlex.split(text)
    spec: dict[str, Any] = {"kind": tokens[0]}
    for token in tokens[1:]:
        if not token.startswith("-"):
            raise BackendError(f"Cannot read {token!r} in TVM target {text!r}; options look like -key=value "
                               "(e.g. 'llvm -mcpu=znver3 -num-cores=2' or 'cuda -arch=sm_90').")
        key, sep, value = token.lstrip("-").partition("=")
        if not key:
            raise BackendError(f"Empty option {token!r} in TVM target {text!r}.")
        spec[key] = _convert(key, value) if sep else True
    return spec


def _convert(key: str, value: str) -> Any:
    if key in _LIST_ATTRS:
        return [v for v in value.split(",") if v]
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        return value


def _fill_host_defaults(spec: dict[str, Any]) -> None:
    """A bare 'llvm' means this machine: its CPU name (for SIMD width) and its core count."""
    if "mtriple" in spec:  # cross-compiling: only the user knows the remote CPU
        return
    if "mcpu" not in spec:
        from tvm.target import codegen

        spec["mcpu"] = str(codegen.llvm_get_system_cpu())
        missing = missing_dot_product_features(spec["mcpu"], cpu_flags())
        if missing and "mattr" not in spec:
            spec["mattr"] = [f"+{feature}" for feature in missing]
    spec.setdefault("num-cores", os.cpu_count() or 1)


# Linux /proc/cpuinfo flag -> LLVM feature, for the dot products the int8 and bf16 kernels dispatch on.
_DOT_PRODUCT_FEATURES = {"avx512_vnni": "avx512vnni", "avx_vnni": "avxvnni", "avx512_bf16": "avx512bf16",
                         "amx_tile": "amx-tile", "amx_int8": "amx-int8", "amx_bf16": "amx-bf16",
                         "avx512_fp16": "avx512fp16"}


def missing_dot_product_features(mcpu: str, flags: frozenset[str] | None) -> list[str]:
    """Dot-product features this host has (its CPU flags) that LLVM's CPU name `mcpu` lacks.

    LLVM names the host from its CPUID family/model, and a VM may present a model that names an older
    part: one AMX Xeon guest reported model 167, which LLVM calls rocketlake (AVX-512 VNNI but no BF16
    or AMX), so --precision bf16 was refused on a CPU with AVX512_BF16. The flags the kernel reports
    are what the CPU runs; these features go into the target's mattr."""
    if not flags:
        return []
    from tvm.target import Target, codegen

    known = set(codegen.llvm_get_cpu_features(Target({"kind": "llvm", "mcpu": mcpu})))
    return [feature for flag, feature in _DOT_PRODUCT_FEATURES.items() if flag in flags and feature not in known]


def validate_target(spec: dict[str, Any]):
    """Construct tvm.target.Target(spec) or raise BackendError naming the problem."""
    tvm = import_tvm()
    kinds = set(tvm.target.Target.list_kinds())
    if spec["kind"] not in kinds:
        raise BackendError(f"Unknown TVM target kind {spec['kind']!r}; use one of "
                           f"{', '.join(sorted(k for k in kinds if k in _GPU_KINDS | {'llvm', 'c'}))}.")
    try:
        return tvm.target.Target(spec)
    except Exception as exc:  # TVM raises ValueError/TVMError with a long message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"TVM rejects the target {json.dumps(spec)}: {first}. "
                           "Check the option names (llvm: -mcpu, -mattr, -mtriple, -num-cores; cuda: -arch).") from exc


def is_gpu(spec: dict[str, Any]) -> bool:
    return spec["kind"] in _GPU_KINDS


def import_tvm():
    """Import tvm, or raise the BackendError that tells the user how to install it."""
    try:
        import tvm
        from tvm import relax  # noqa: F401  (fails on a TVM build without Relax)
    except ImportError as exc:
        raise BackendError("TVM is not installed; pip install 'yolograph[tvm]'") from exc
    return tvm
