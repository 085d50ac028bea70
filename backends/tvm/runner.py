"""Load a TVM artifact (library + sidecar) and run it with the Relax VM."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from yolograph.runtime.feeds import as_feed
from yolograph.runtime.timing import LatencyStats, measure
from yolograph.backends.tvm.compile import ARTIFACT_FORMAT, sidecar_path
from yolograph.backends.tvm.target import import_tvm
from yolograph.errors import BackendError, DataError


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The artifact's sidecar, or None when `path` is not a TVM artifact."""
    path = Path(path)
    candidates = [path] if path.name.endswith(".so.json") or path.suffix == ".json" else [sidecar_path(path)]
    for candidate in candidates:
        try:
            data = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("format") == ARTIFACT_FORMAT:
            return data
    return None


def is_artifact(path: Path) -> bool:
    """True for a library written by compile_model (its .json sidecar beside it), or that sidecar."""
    sidecar = read_sidecar(Path(path))
    if sidecar is None:
        return False
    return _library_of(Path(path), sidecar).exists()


def _library_of(path: Path, sidecar: dict[str, Any]) -> Path:
    if path.suffix == ".json":
        return path.with_name(sidecar.get("library", path.name[: -len(".json")]))
    return path


class TvmRunner:
    """Runs a compiled TVM artifact; the same interface as OrtRunner."""

    backend = "tvm"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        path = Path(path)
        sidecar = read_sidecar(path)
        if sidecar is None:
            raise BackendError(f"{path} is not a yolograph TVM artifact (no {sidecar_path(path).name} sidecar); "
                               "compile one with yolograph compile --backend tvm.")
        library = _library_of(path, sidecar)
        if not library.exists():
            raise BackendError(f"The TVM library {library} named by the sidecar is missing; recompile the model.")
        threads = threads or _compiled_cores(sidecar)
        if threads:  # TVM's thread pool reads this once, when it starts
            os.environ["TVM_NUM_THREADS"] = str(threads)
        tvm = import_tvm()
        from tvm import relax

        self.sidecar = sidecar
        self.path = library
        self.device = _device(tvm, sidecar.get("device", "cpu"))
        try:
            self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), self.device)
        except Exception as exc:  # noqa: BLE001 - TVM raises TVMError on incompatible libraries
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"TVM cannot load {library}: {first}. Recompile it on this machine's TVM.") from exc
        self.main = self.vm["main"]
        self.inputs = sidecar["inputs"]
        self.input_names = [i["name"] for i in self.inputs]
        self.output_names = [o["name"] for o in sidecar["outputs"]]
        self.imgsz = tuple(sidecar.get("imgsz") or (640, 640))
        self.metadata = dict(sidecar.get("metadata") or {})
        self.threads = int(os.environ["TVM_NUM_THREADS"]) if os.environ.get("TVM_NUM_THREADS", "").isdigit() else None

    def _arguments(self, feed: Mapping[str, np.ndarray] | np.ndarray) -> list:
        import tvm

        feed = as_feed(feed, self.input_names)
        arguments = []
        for info in self.inputs:
            array = np.asarray(feed[info["name"]])
            if list(array.shape) != list(info["shape"]):
                raise DataError(f"Input {info['name']!r} has shape {list(array.shape)}; the compiled model "
                                f"takes {info['shape']} (TVM artifacts have static shapes).")
            array = np.ascontiguousarray(array, dtype=info["dtype"])
            arguments.append(tvm.runtime.tensor(array, self.device))
        return arguments

    def run(self, feed: Mapping[str, np.ndarray] | np.ndarray) -> list[np.ndarray]:
        result = self.main(*self._arguments(feed))
        return [np.asarray(t.numpy()) for t in _flatten(result)]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The first output for one input tensor: what evaluation calls."""
        return self.run(images)[0]

    def benchmark(self, runs: int = 50, warmup: int = 5, seed: int = 0) -> LatencyStats:
        rng = np.random.default_rng(seed)
        feed = {i["name"]: (rng.integers(0, 256, i["shape"]) if np.dtype(i["dtype"]).kind in "ui"
                            else rng.random(i["shape"], dtype=np.float32)).astype(i["dtype"]) for i in self.inputs}
        arguments = self._arguments(feed)

        def call() -> None:
            outputs = _flatten(self.main(*arguments))
            if self.device.dlpack_device_type() != 1:  # GPU: wait for the kernels, as ORT's run() does
                self.device.sync()
            del outputs

        return measure(call, runs=runs, warmup=warmup, backend=self.backend, threads=self.threads)


def _flatten(result) -> list:
    if hasattr(result, "numpy"):
        return [result]
    flat = []
    for item in result:
        flat.extend(_flatten(item))
    return flat


def _device(tvm, name: str):
    if name == "cpu":
        return tvm.cpu(0)
    device = tvm.device(name, 0)
    if not device.exist:
        raise BackendError(f"This TVM artifact runs on {name}, but no {name} device is available here.")
    return device


def _compiled_cores(sidecar: dict[str, Any]) -> int | None:
    """The CPU target's num-cores, unless the user set TVM_NUM_THREADS.

    Without it TVM starts half the logical CPUs on x86 (it assumes hyper-threading), which on a
    2-vCPU machine with one thread per core is a single thread: half the speed the schedules,
    parallelized for num-cores, were built for.
    """
    if os.environ.get("TVM_NUM_THREADS") or sidecar.get("device") != "cpu":
        return None
    cores = (sidecar.get("target") or {}).get("num-cores")
    return int(cores) if cores else None


def load_runner(path: Path, threads: int | None = None) -> TvmRunner:
    return TvmRunner(Path(path), threads=threads)
