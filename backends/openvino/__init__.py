"""OpenVINO backend: the optimized ONNX IR (float or Q/DQ) as an OpenVINO IR for CPU, GPU, NPU or AUTO.

    compile_model(model, "model.xml", RuntimeConfig(device="CPU", threads=2, inference_precision="f32"))
    runner = load_runner("model.xml"); runner.predict(images); runner.benchmark(50, 5)

OpenVINO's ONNX converter reads the Q/DQ graph as FakeQuantize and its CPU plugin's low-precision
transformations run the quantized Conv/MatMul/Concat/pooling regions in integer kernels; the
`openvino` quantization profile places Q/DQ where those rules apply. Importing this package does not
import OpenVINO; a missing OpenVINO raises BackendError when used (pip install 'yolograph[openvino]').
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from yolograph.runtime.backend import Backend, register_backend

if TYPE_CHECKING:
    from yolograph.backends.openvino.runner import OpenVinoRunner
    from yolograph.backends.openvino.settings import RuntimeConfig
    from yolograph.ir.model import Model

__all__ = ["OpenVinoOptions", "compile_model", "load_runner", "is_artifact"]


@dataclass(frozen=True)
class OpenVinoOptions:
    device: str = field(default="CPU", metadata={
        "help": "openvino: device to compile for: CPU, GPU, NPU, AUTO or as OpenVINO lists it (GPU.1)"})
    threads: int = field(default=0, metadata={
        "help": "openvino: CPU inference threads recorded for the runner (0: all cores; bench --threads overrides)"})
    performance_hint: Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"] = field(default="LATENCY", metadata={
        "help": "openvino: performance hint"})
    inference_precision: Literal["f32", "bf16", "f16"] | None = field(default=None, metadata={
        "help": "openvino: precision of the float layers (default: the device's; bf16 on AVX512_BF16 CPUs)"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "openvino: model cache folder (compiled blobs reused across loads)"})
    fp16_weights: bool = field(default=False, metadata={
        "help": "openvino: store float weights as f16 in the .bin (half the file; f32 by default)"})

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads must be 0 or more, not {self.threads}")
        if not self.device.strip():
            raise ValueError("device must name an OpenVINO device, e.g. CPU")

    def runtime_config(self) -> RuntimeConfig:
        from yolograph.backends.openvino.settings import RuntimeConfig

        return RuntimeConfig(device=self.device.strip(), threads=self.threads,
                             performance_hint=self.performance_hint,
                             inference_precision=self.inference_precision, cache_dir=self.cache_dir)


def compile_model(model: Model, output: Path, config: RuntimeConfig | None = None, *,
                  fp16_weights: bool = False, quiet: bool = False) -> Path:
    """Write `model` as `output` (.xml) + .bin + .xml.json sidecar; see compile.py."""
    from yolograph.backends.openvino.compile import compile_model as _compile
    from yolograph.backends.openvino.settings import RuntimeConfig

    return _compile(model, Path(output), config or RuntimeConfig(), fp16_weights=fp16_weights, quiet=quiet)


def load_runner(path: Path, threads: int = 0) -> OpenVinoRunner:
    """Load an IR written by compile_model, or any model OpenVINO reads (run with its defaults)."""
    from yolograph.backends.openvino.runner import load_runner as _load

    return _load(Path(path), threads=threads)


def is_artifact(path: Path) -> bool:
    from yolograph.backends.openvino.runner import is_artifact as _is

    return _is(Path(path))


@register_backend("openvino")
class OpenVinoBackend(Backend):
    """Intel OpenVINO: ONNX (float or Q/DQ) to OpenVINO IR, integer CPU kernels, GPU/NPU/AUTO devices."""

    Options = OpenVinoOptions
    extra = "openvino"
    artifact_suffixes = (".xml",)

    def compile(self, model: Model, output: Path, options: OpenVinoOptions) -> Path:
        return compile_model(model, output, options.runtime_config(), fp16_weights=options.fp16_weights)

    def load_runner(self, path: Path, *, threads: int = 0) -> OpenVinoRunner:
        return load_runner(path, threads=threads)

    def is_artifact(self, path: Path) -> bool:
        return is_artifact(path)
