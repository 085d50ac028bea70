"""TensorRT backend: readiness check (CPU), engine build, engine runner (NVIDIA GPU).

Everything that needs TensorRT or CUDA imports it lazily, so this package imports, and its
readiness check, build planning, sidecar and inspector parsing run, on a machine without either.
"""

from __future__ import annotations

from yolograph.backends.tensorrt.readiness import Finding, check_readiness, format_findings

__all__ = ["Finding", "check_readiness", "format_findings"]
