"""Lazy access to TensorRT and the CUDA runtime, and the one-line answer when either is missing.

Buffers move with cuda-python's CUDA runtime bindings (`cuda.bindings.runtime`, `cuda.cudart`
before 12.6): NVIDIA's own, maintained, thin bindings of the documented CUDA runtime API, released
in step with CUDA, and the pair TensorRT's Python samples use. It adds no framework (torch, cupy) and
no second abstraction over TensorRT's I/O tensors (polygraphy), so the runner calls
`set_tensor_address` / `execute_async_v3` itself.
"""

from __future__ import annotations

from typing import Any

from yolograph.errors import BackendError

NO_GPU_MESSAGE = ("TensorRT needs an NVIDIA GPU and the tensorrt package: pip install 'yolograph[tensorrt]'; "
                  "none was found.")
SUPPORTED_MAJORS = (10, 11)  # 10: builder flags or strongly typed; 11: strongly typed only


def import_tensorrt() -> Any:
    import tensorrt  # noqa: PLC0415 - optional dependency, imported on use

    return tensorrt


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime  # noqa: PLC0415 - cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime  # noqa: PLC0415 - older cuda-python
    return runtime


def gpu_available() -> tuple[bool, str]:
    """(True, "<GPU name>, TensorRT <version>") or (False, why not), without raising."""
    try:
        trt = import_tensorrt()
    except Exception as exc:  # ImportError, or a broken install raising OSError on its shared libraries
        return False, f"the tensorrt package is not importable ({type(exc).__name__}: {exc})"
    major = version_major(getattr(trt, "__version__", "0"))
    if major not in SUPPORTED_MAJORS:
        return False, (f"TensorRT {trt.__version__} is installed; this backend uses the TensorRT 10 and 11 APIs "
                       "(pip install 'tensorrt>=10.1,<12')")
    try:
        cudart = import_cudart()
    except Exception as exc:
        return False, f"cuda-python is not importable ({type(exc).__name__}: {exc})"
    try:
        error, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # no driver library at all
        return False, f"the CUDA runtime cannot start ({exc})"
    if _failed(cudart, error) or count < 1:
        return False, f"no NVIDIA GPU is visible to CUDA ({_error_name(cudart, error)})"
    return True, f"{device_name(cudart)}, TensorRT {trt.__version__}"


def require_gpu() -> tuple[Any, Any]:
    """(tensorrt, cudart) modules, or BackendError with the one-line NO_GPU_MESSAGE."""
    ok, reason = gpu_available()
    if not ok:
        raise BackendError(NO_GPU_MESSAGE) from RuntimeError(reason)
    return import_tensorrt(), import_cudart()


def attach_context(inspector: Any, context: Any) -> None:
    """Point an EngineInspector at an execution context, so dynamic shapes print concrete formats.

    The Python property is `execution_context` in current TensorRT 10 docs and `context` in older ones.
    """
    for name in ("execution_context", "context"):
        if hasattr(inspector, name):
            setattr(inspector, name, context)
            return


def device_name(cudart: Any, device: int = 0) -> str:
    props = check(cudart, cudart.cudaGetDeviceProperties(device))
    name = props.name
    return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00").strip()


def compute_capability(cudart: Any, device: int = 0) -> str:
    props = check(cudart, cudart.cudaGetDeviceProperties(device))
    return f"{props.major}.{props.minor}"


def check(cudart: Any, result: Any) -> Any:
    """Unpack a cuda-python `(error, *values)` result, raising BackendError on a CUDA error."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if _failed(cudart, error):
        raise BackendError(f"CUDA call failed with {_error_name(cudart, error)}; check the GPU and driver.")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _failed(cudart: Any, error: Any) -> bool:
    return error != cudart.cudaError_t.cudaSuccess


def _error_name(cudart: Any, error: Any) -> str:
    try:
        _, name = cudart.cudaGetErrorName(error)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return str(error)


def installed_major() -> int | None:
    """The installed tensorrt package's major version, from its metadata (nothing is imported); None without it."""
    import sys
    from importlib import metadata

    loaded = sys.modules.get("tensorrt")  # already imported (or stood in for): its own version
    if loaded is not None and getattr(loaded, "__version__", None):
        return version_major(loaded.__version__)
    for name in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt_cu13"):
        try:
            return version_major(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
    return None


def version_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0
