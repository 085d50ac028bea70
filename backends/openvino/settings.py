"""OpenVINO import, device checks and the runtime configuration built from the backend options.

Kept apart from the compile and runner modules so both turn the same options into the same
OpenVINO properties (what the sidecar records is what the runner applies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yolograph.errors import BackendError

PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}
HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
# Devices that dispatch to others rather than being hardware OpenVINO lists itself.
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def import_openvino():
    """The openvino module, or a BackendError saying how to install it."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendError("The openvino backend needs OpenVINO, which is not installed; "
                           "run pip install 'yolograph[openvino]'.") from exc
    return openvino


@dataclass(frozen=True)
class RuntimeConfig:
    """What the runner sets on OpenVINO when it loads the IR (recorded in the sidecar)."""

    device: str = "CPU"
    threads: int = 0  # 0: OpenVINO's default (all cores)
    performance_hint: str = "LATENCY"
    inference_precision: str | None = None  # None: OpenVINO's default for the device
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.inference_precision is not None and self.inference_precision not in PRECISIONS:
            raise BackendError(f"OpenVINO inference precision {self.inference_precision!r} is not one of "
                               f"{', '.join(PRECISIONS)}.")
        if self.performance_hint not in HINTS:
            raise BackendError(f"OpenVINO performance hint {self.performance_hint!r} is not one of {', '.join(HINTS)}.")
        if self.threads < 0:
            raise BackendError(f"OpenVINO threads must be 0 (all cores) or more, not {self.threads}.")

    def properties(self, threads: int = 0) -> dict[str, Any]:
        """OpenVINO properties for compile_model; `threads` (non-zero) overrides the recorded count."""
        props: dict[str, Any] = {"PERFORMANCE_HINT": self.performance_hint}
        count = threads or self.threads
        if count and _device_kind(self.device) == "CPU":
            props["INFERENCE_NUM_THREADS"] = count
        if self.inference_precision:
            props["INFERENCE_PRECISION_HINT"] = PRECISIONS[self.inference_precision]
        if self.cache_dir:
            props["CACHE_DIR"] = self.cache_dir
        return props

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "threads": self.threads, "performance_hint": self.performance_hint,
                "inference_precision": self.inference_precision, "cache_dir": self.cache_dir}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuntimeConfig:
        return cls(device=str(data.get("device", "CPU")), threads=int(data.get("threads") or 0),
                   performance_hint=str(data.get("performance_hint") or "LATENCY"),
                   inference_precision=data.get("inference_precision"), cache_dir=data.get("cache_dir"))


def _device_kind(device: str) -> str:
    return device.split(":")[0].split(".")[0].upper()


def check_device(core: Any, device: str) -> None:
    """Raise BackendError unless OpenVINO can run on `device` here (GPU.1, AUTO:GPU,CPU and the like)."""
    available = list(core.available_devices)
    kind = _device_kind(device)
    if kind in VIRTUAL_DEVICES:
        targets = device.split(":", 1)[1].split(",") if ":" in device else []
        missing = [t for t in targets if t and t not in available and _device_kind(t) not in available]
        if not available or missing:
            raise BackendError(f"OpenVINO cannot run {device}: it lists only {', '.join(available) or 'no device'} "
                               "here; name available devices.")
        return
    if device not in available and kind not in {_device_kind(d) for d in available}:
        raise BackendError(f"OpenVINO lists no {device} device on this machine (available: "
                           f"{', '.join(available) or 'none'}); use --device CPU or install the device's driver.")


def resolved_precision(compiled: Any) -> str | None:
    """The inference precision OpenVINO chose for a compiled model (None where the device does not say)."""
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except RuntimeError:  # AUTO and some plugins do not report it
        return None
    names = {"float32": "f32", "f32": "f32", "bfloat16": "bf16", "bf16": "bf16", "float16": "f16", "f16": "f16"}
    text = str(getattr(value, "get_type_name", lambda: value)())
    return names.get(text, text)


def first_line(exc: BaseException) -> str:
    """The first line of an OpenVINO error that says something (its messages open with source locations)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    meaningful = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return (meaningful or lines or [type(exc).__name__])[0].rstrip(".:")
