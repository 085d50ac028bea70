"""Run a built engine: device buffers per batch size, host <-> device copies, latency.

One execution context per batch size (each bound to that batch's optimization profile), with
device buffers allocated once. `run` copies inputs in, executes and copies outputs back on one CUDA
stream; `benchmark` times the GPU work only (inputs already on the device, `execute_async_v3` +
stream synchronize), like trtexec's GPU compute time; `benchmark(..., include_copies=True)` times
the full host-to-host call instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
import numpy as np

from yolograph.runtime.feeds import as_feed
from yolograph.runtime.timing import LatencyStats, measure
from yolograph.backends.tensorrt.runtime import attach_context, check, require_gpu
from yolograph.backends.tensorrt.sidecar import EngineSidecar, read_sidecar
from yolograph.errors import BackendError, DataError


class _Bindings:
    """A context bound to one batch size's profile, with its device buffers."""

    def __init__(self, runner: TrtRunner, batch: int) -> None:
        trt, cudart, engine = runner.trt, runner.cudart, runner.engine
        self.cudart = cudart
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError("TensorRT could not create an execution context (GPU memory full?).")
        if runner.profiled:
            self.context.set_optimization_profile_async(runner.profile_index(batch), runner.stream_handle)
        self.buffers: dict[str, tuple[int, np.ndarray]] = {}  # name -> (device pointer, host array)
        for name in runner.input_names:
            shape = (batch, *runner.shapes[name][1:])
            if not self.context.set_input_shape(name, shape):
                raise BackendError(f"The engine rejects input {name} with shape {list(shape)}.")
        for name in (*runner.input_names, *runner.output_names):
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host = np.empty(shape, dtype)
            pointer = check(cudart, cudart.cudaMalloc(max(host.nbytes, 1)))
            self.buffers[name] = (int(pointer), host)
            self.context.set_tensor_address(name, int(pointer))

    def free(self) -> None:
        for pointer, _ in self.buffers.values():
            self.cudart.cudaFree(pointer)
        self.buffers.clear()


class TrtRunner:
    """Runs a TensorRT engine built by yolograph (`model.engine` + `model.engine.json`)."""

    backend = "tensorrt"

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            raise BackendError(f"The engine {path} does not exist; build it with `yolograph compile --backend tensorrt`.")
        self.sidecar: EngineSidecar = read_sidecar(path)
        self.trt, self.cudart = require_gpu()
        trt = self.trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT cannot load {path.name}: engines only run with the TensorRT version and GPU "
                               f"that built them ({self.sidecar.tensorrt_version}, {self.sidecar.device}); rebuild it.")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        spec = {t.name: t.shape for t in (*self.sidecar.inputs, *self.sidecar.outputs)}
        self.shapes = {n: tuple(spec.get(n) or self.engine.get_tensor_shape(n)) for n in names}
        self.batch_sizes = self.sidecar.batch_sizes
        self.profiled = self.engine.num_optimization_profiles > 1 or any(d == -1 for d in self.shapes[self.input_names[0]])
        self.imgsz = self.sidecar.imgsz
        self.stream = check(self.cudart, self.cudart.cudaStreamCreate())
        self.stream_handle = int(self.stream)  # TensorRT takes the raw cudaStream_t value
        self._bound: dict[int, _Bindings] = {}

    def profile_index(self, batch: int) -> int:
        if batch not in self.batch_sizes:
            raise DataError(f"The engine was built for batch sizes {list(self.batch_sizes)}, not {batch}; rebuild "
                            "with --batch including it.")
        return self.batch_sizes.index(batch) if self.profiled else 0

    def _bindings(self, batch: int) -> _Bindings:
        self.profile_index(batch)
        if batch not in self._bound:
            self._bound[batch] = _Bindings(self, batch)
        return self._bound[batch]

    def run(self, feed: Mapping[str, np.ndarray] | np.ndarray) -> list[np.ndarray]:
        feed = as_feed(feed, self.input_names)
        batch = int(np.asarray(feed[self.input_names[0]]).shape[0])
        bound = self._bindings(batch)
        cudart, kind = self.cudart, self.cudart.cudaMemcpyKind
        for name in self.input_names:
            pointer, host = bound.buffers[name]
            value = np.asarray(feed[name])
            if value.shape != host.shape:
                raise DataError(f"Input {name} has shape {list(value.shape)}; the engine expects {list(host.shape)}.")
            np.copyto(host, value, casting="same_kind")
            check(cudart, cudart.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes,
                                                 kind.cudaMemcpyHostToDevice, self.stream))
        self._execute(bound)
        results = []
        for name in self.output_names:
            pointer, host = bound.buffers[name]
            check(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes,
                                                 kind.cudaMemcpyDeviceToHost, self.stream))
            results.append(host)
        check(cudart, cudart.cudaStreamSynchronize(self.stream))
        return [r.copy() for r in results]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The first output for one input tensor: what evaluation calls."""
        return self.run(images)[0]

    def benchmark(self, runs: int = 200, warmup: int = 20, batch: int | None = None, seed: int = 0,
                  include_copies: bool = False) -> LatencyStats:
        """Latency of one batch: GPU work only by default (see the module docstring)."""
        batch = batch or self.batch_sizes[0]
        rng = np.random.default_rng(seed)
        feed = {n: rng.random((batch, *self.shapes[n][1:]), dtype=np.float32) for n in self.input_names}
        bound = self._bindings(batch)
        self.run(feed)  # inputs now on the device
        if include_copies:
            call = lambda: self.run(feed)  # noqa: E731
        else:
            def call() -> None:
                self._execute(bound)
                check(self.cudart, self.cudart.cudaStreamSynchronize(self.stream))
        label = f"{self.backend}-{self.sidecar.precision}-b{batch}" + ("-e2e" if include_copies else "")
        return measure(call, runs=runs, warmup=warmup, backend=label)

    def engine_information(self) -> str:
        """The engine inspector's JSON for this engine (DETAILED: per-layer precision and tactic)."""
        inspector = self.engine.create_engine_inspector()
        attach_context(inspector, self._bindings(self.batch_sizes[0]).context)
        return inspector.get_engine_information(self.trt.LayerInformationFormat.JSON)

    def _execute(self, bound: _Bindings) -> None:
        if not bound.context.execute_async_v3(self.stream_handle):
            raise BackendError("TensorRT failed to execute the engine; see its log above.")

    def close(self) -> None:
        for bound in self._bound.values():
            bound.free()
        self._bound.clear()
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self) -> None:  # best effort: buffers die with the process anyway
        try:
            self.close()
        except Exception:
            pass


def load_runner(path: str | Path) -> TrtRunner:
    return TrtRunner(path)

