"""Load an OpenVINO IR (or any model OpenVINO reads) and run it: the Runner protocol on OpenVINO.

A yolograph IR is run as its sidecar says (device, threads, hint, precision, cache); any other
OpenVINO-readable model (an IR another tool wrote, e.g. NNCF's, or an .onnx file) runs with OpenVINO's
defaults on the CPU, so `bench` and the benchmarks time peers through the same code path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from yolograph.backends.openvino.settings import (
    RuntimeConfig,
    check_device,
    first_line,
    import_openvino,
    resolved_precision,
)
from yolograph.backends.openvino.sidecar import read_sidecar, xml_of

from yolograph.errors import BackendError, DataError
from yolograph.ir.metadata import INPUT_LAYOUT
from yolograph.layout.io import input_from_nchw
from yolograph.runtime.feeds import InputSpec, as_feed, random_feed
from yolograph.runtime.timing import LatencyStats, measure


def is_artifact(path: str | Path) -> bool:
    """An OpenVINO IR: an .xml with its .bin beside it, or a yolograph sidecar of one."""
    xml = xml_of(path)
    return xml.suffix == ".xml" and xml.exists() and xml.with_suffix(".bin").exists()


class OpenVinoRunner:
    """Runs an OpenVINO model with one synchronous infer request (batch-1 latency, like OrtRunner)."""

    backend = "openvino"

    def __init__(self, path: str | Path, *, threads: int = 0, config: RuntimeConfig | None = None,
                 perf_counts: bool = False) -> None:
        ov = import_openvino()
        path = xml_of(path)
        if not path.exists():
            raise BackendError(f"{path} does not exist; compile it with yolograph compile --backend openvino.")
        if path.suffix == ".xml" and not path.with_suffix(".bin").exists():
            raise BackendError(f"The weights {path.with_suffix('.bin')} of {path} are missing; recompile the model.")
        sidecar = read_sidecar(path) if path.suffix == ".xml" else None
        self.sidecar = sidecar or {}
        self.config = config or (RuntimeConfig.from_json(sidecar["runtime"]) if sidecar else RuntimeConfig())
        core = ov.Core()
        check_device(core, self.config.device)
        properties = self.config.properties(threads)
        if perf_counts:
            properties["PERF_COUNT"] = True
        try:
            self.compiled = core.compile_model(str(path), self.config.device, properties)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own exception types
            raise BackendError(f"OpenVINO cannot load {path}: {first_line(exc)}; recompile it with this "
                               "machine's OpenVINO.") from exc
        self.path = path
        self.request = self.compiled.create_infer_request()
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]
        self.input_specs = [InputSpec(p.get_any_name(), _static_shape(p), str(p.get_element_type().to_dtype()))
                            for p in self.compiled.inputs]
        self.metadata = dict(self.sidecar.get("metadata") or {})
        imgsz = self.sidecar.get("imgsz")
        shape = self.input_specs[0].shape if self.input_specs else ()
        self.imgsz = tuple(imgsz) if imgsz else _imgsz_from_shape(shape, self.metadata)
        self.threads = threads or self.config.threads or None
        self.inference_precision = resolved_precision(self.compiled)

    def run(self, feed: Mapping[str, np.ndarray] | np.ndarray) -> list[np.ndarray]:
        feed = self._checked(as_feed(feed, self.input_names))
        self.request.infer(feed)
        # The request reuses its output buffers on the next run: hand out copies.
        return [np.array(self.request.get_output_tensor(i).data) for i in range(len(self.output_names))]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The first output for an NCHW float RGB [0,1] batch, fed as the model takes it."""
        return self.run(input_from_nchw(self.metadata, images))[0]

    def benchmark(self, runs: int = 50, warmup: int = 5, seed: int = 0) -> LatencyStats:
        feed = self._checked(random_feed(self.input_specs, seed))
        return measure(lambda: self.request.infer(feed), runs=runs, warmup=warmup, backend=self.backend,
                       threads=self.threads)

    def perf_counts(self) -> list[dict[str, Any]]:
        """Per-node times of the last run (needs perf_counts=True): name, type, exec type, microseconds."""
        rows = []
        for info in self.request.get_profiling_info():
            rows.append({"name": info.node_name, "type": info.node_type, "exec_type": info.exec_type,
                         "us": info.real_time.total_seconds() * 1e6, "cpu_us": info.cpu_time.total_seconds() * 1e6, "status": str(info.status).split(".")[-1]})
        return rows

    def _checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        checked = {}
        for spec in self.input_specs:
            array = np.asarray(feed[spec.name])
            if list(array.shape) != list(spec.shape):
                raise DataError(f"Input {spec.name!r} has shape {list(array.shape)}; the OpenVINO model takes "
                                f"{list(spec.shape)}.")
            checked[spec.name] = np.ascontiguousarray(array, dtype=spec.dtype)
        return checked


def _static_shape(port: Any) -> tuple[int, ...]:
    shape = port.get_partial_shape()
    return tuple(d.get_length() if d.is_static else 1 for d in shape)


def _imgsz_from_shape(shape: tuple[int, ...], metadata: Mapping[str, str]) -> tuple[int, int]:
    if len(shape) != 4:
        return (640, 640)
    nhwc = metadata.get(INPUT_LAYOUT) == "NHWC"
    return (shape[1], shape[2]) if nhwc else (shape[2], shape[3])


def load_runner(path: str | Path, threads: int = 0) -> OpenVinoRunner:
    return OpenVinoRunner(path, threads=threads)
