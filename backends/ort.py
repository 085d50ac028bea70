"""The ONNX Runtime backend: writes the optimized graph as an ONNX file, run by the reference runner."""

from __future__ import annotations

from pathlib import Path

from yolograph.errors import BackendError
from yolograph.ir.model import Model
from yolograph.ir.serialization import save_model
from yolograph.runtime.backend import Backend, NoBackendOptions, register_backend
from yolograph.runtime.ort import OrtOptions, OrtRunner


@register_backend("ort")
class OrtBackend(Backend):
    """ONNX Runtime (CPU): the everywhere-reference; the artifact is the ONNX file itself."""

    Options = NoBackendOptions
    artifact_suffixes = (".onnx",)

    def compile(self, model: Model, output: Path, options: NoBackendOptions) -> Path:
        if output.suffix != ".onnx":
            raise BackendError(f"The ort backend writes ONNX; name the output with .onnx, not {output.name!r}.")
        return save_model(model, output)

    def load_runner(self, path: Path, *, threads: int = 0) -> OrtRunner:
        from yolograph.frontends import load_model

        return OrtRunner(load_model(str(path)), OrtOptions(threads=threads))
