"""Deployment targets: one name (`--target ort-int8`) for the tested pipeline + backend of an accelerator.

A target is data: the pipeline text (with a `{calibration}` slot for INT8 targets, filled from
`--data`), the backend that compiles it, that backend's options, and what it needs (a pip extra, the
Python modules it imports, hardware). The pipelines are the ones the benchmarks measured
(benchmarks/README.md); `yolograph targets` lists them and says which are ready on this machine.

This is a core module: it names backends but never imports them (readiness is read from the
installed Python modules, so listing targets imports no TVM, OpenVINO or TensorRT).
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from yolograph.errors import DataError, PipelineError

# Calibration images of an INT8 target when `--data` names no range: the project's calibration split.
DEFAULT_CALIBRATION_IMAGES = "0:32"
CALIBRATION_SLOT = "{calibration}"
# Characters that would end a pipeline option value early (the pipeline text is comma/brace separated).
_PIPELINE_SEPARATORS = frozenset(",{}=")

_FLOAT = "fold-bn,cleanup"
_INT8 = "calibrate{{method=percentile,{calibration}}}"


@dataclass(frozen=True)
class Target:
    """One deployment target: what to run, on what, and what it needs."""

    name: str
    summary: str
    backend: str
    pipeline: str  # pipeline text; INT8 targets hold the CALIBRATION_SLOT
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    extra: str | None = None  # pip extra that installs the backend: pip install 'yolograph[extra]'
    modules: tuple[str, ...] = ()  # Python modules the backend imports
    hardware: str | None = None  # hardware the compiled artifact needs
    suffix: str = ".onnx"  # the artifact's file name ending

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend_options", MappingProxyType(dict(self.backend_options)))

    @property
    def needs_data(self) -> bool:
        """True when the pipeline calibrates (an INT8 target): it needs images from `--data`."""
        return CALIBRATION_SLOT in self.pipeline

    def needs(self) -> list[str]:
        """What this target needs, as short phrases (for `yolograph targets`)."""
        out = []
        if self.extra:
            out.append(f"pip install 'yolograph[{self.extra}]'")
        if self.hardware:
            out.append(self.hardware)
        if self.needs_data:
            out.append("calibration images (--data DIR)")
        return out or ["nothing beyond yolograph"]

    def missing_modules(self) -> list[str]:
        """The Python modules of `modules` that are not installed here."""
        return [name for name in self.modules if importlib.util.find_spec(name) is None]

    def pipeline_text(self, data: str | Path | None = None, images: str | None = None) -> str:
        """The pipeline with its calibration data filled in (DataError when an INT8 target has none)."""
        if not self.needs_data:
            return self.pipeline
        if data is None:
            raise DataError(f"Target {self.name!r} calibrates INT8 scales and needs images: add --data DIR "
                            "(a dataset root, image folder or dataset yaml, e.g. coco128).")
        text = str(data)
        if _PIPELINE_SEPARATORS & set(text):
            raise DataError(f"The calibration data path {text!r} contains one of , {{ }} =, which pipeline text "
                            "cannot hold; move or link the images to a path without them.")
        if not Path(text).exists():
            raise DataError(f"The calibration data {text} does not exist; give --data an existing dataset "
                            "root, image folder or dataset yaml.")
        calibration = f"images={text},range={images or DEFAULT_CALIBRATION_IMAGES}"
        return self.pipeline.replace(CALIBRATION_SLOT, calibration)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "backend": self.backend, "pipeline": self.pipeline,
                "backend_options": dict(self.backend_options), "needs": self.needs(),
                "needs_data": self.needs_data, "extra": self.extra, "hardware": self.hardware,
                "missing": self.missing_modules(), "suffix": self.suffix}


def _int8(profile: str, float_part: str = _FLOAT) -> str:
    return f"{float_part},insert-qdq{{profile={profile}}}," + _INT8.format(calibration=CALIBRATION_SLOT)


_NVIDIA = "an NVIDIA GPU (CUDA 12 driver for TensorRT 10, CUDA 13 for 11)"

_TARGETS = (
    Target("ort-fp32", "ONNX Runtime, float: BN folded, constants folded, DFL as a MatMul (exact)",
           "ort", f"{_FLOAT},fast-dfl"),
    Target("ort-int8", "ONNX Runtime CPU, INT8 (QLinearConv): the default INT8 pipeline, every Conv INT8",
           "ort", _int8("ort-cpu", f"{_FLOAT},fast-dfl")),
    Target("openvino-fp32", "OpenVINO CPU, float IR", "openvino", f"{_FLOAT},fast-dfl",
           extra="openvino", modules=("openvino",), suffix=".xml"),
    Target("openvino-int8", "OpenVINO CPU, INT8 (Q/DQ read as FakeQuantize, integer kernels)", "openvino",
           _int8("openvino", f"{_FLOAT},fast-dfl"), extra="openvino", modules=("openvino",), suffix=".xml"),
    Target("tvm-cpu", "Apache TVM on this CPU, float, analytic NHWC schedules (no tuning)", "tvm", _FLOAT,
           extra="tvm", modules=("tvm",), suffix=".so"),
    Target("tvm-int8", "Apache TVM on this CPU, integer conv2d (slower than tvm-cpu without VNNI schedules)",
           "tvm", _int8("tvm"), extra="tvm", modules=("tvm",), suffix=".so"),
    # FP16 written into the graph (to-fp16), so TensorRT 11's strongly typed build and 10's both take it.
    Target("trt-fp16", "TensorRT engine, FP16 in the graph (to-fp16; float32 decode and DFL islands)", "tensorrt",
           f"{_FLOAT},to-fp16", {"precision": "fp16"}, extra="tensorrt", modules=("tensorrt",),
           hardware=_NVIDIA, suffix=".engine"),
    Target("trt-int8", "TensorRT engine, explicit INT8 (Q/DQ), FP16 fallback", "tensorrt", _int8("trt"),
           {"precision": "int8"}, extra="tensorrt", modules=("tensorrt",), hardware=_NVIDIA, suffix=".engine"),
    Target("trt-best", "TensorRT engine, INT8 convs (Q/DQ) and FP16 elsewhere, all written in the graph",
           "tensorrt", _int8("trt") + ",to-fp16", {"precision": "best"}, extra="tensorrt", modules=("tensorrt",),
           hardware=_NVIDIA, suffix=".engine"),
)

TARGETS: Mapping[str, Target] = MappingProxyType({t.name: t for t in _TARGETS})


def get_target(name: str) -> Target:
    """The target called `name`; PipelineError listing them (and the closest name) otherwise."""
    if name in TARGETS:
        return TARGETS[name]
    close = difflib.get_close_matches(name, list(TARGETS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise PipelineError(f"Unknown target {name!r}; use one of {', '.join(TARGETS)} "
                        f"(`yolograph targets` says what each needs).{hint}")


def format_targets(targets: Mapping[str, Target] = TARGETS) -> str:
    """The table `yolograph targets` prints."""
    width = max(len(name) for name in targets)
    lines = []
    for target in targets.values():
        missing = target.missing_modules()
        state = "ready" if not missing else f"not installed ({', '.join(missing)})"
        if not missing and target.hardware:
            state = f"installed; needs {target.hardware}"
        lines.append(f"{target.name:<{width}}  {target.summary}")
        lines.append(f"{'':<{width}}  backend {target.backend}"
                     + (" " + ",".join(f"{k}={v}" for k, v in target.backend_options.items())
                        if target.backend_options else "")
                     + f"; needs: {'; '.join(target.needs())}; {state}")
        lines.append(f"{'':<{width}}  pipeline {target.pipeline.replace(CALIBRATION_SLOT, 'images=DATA,range=0:32')}")
    return "\n".join(lines)
