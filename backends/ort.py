"""ONNX Runtime backend: the reference every other backend is compared against."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from yolograph.backends.benchmark import LatencyStats, measure
from yolograph.errors import BackendError, DataError
from yolograph.ir.model import Model
from yolograph.layout.io import input_from_nchw


@dataclass(frozen=True)
class OrtOptions:
    threads: int = 0  # 0: ONNX Runtime's default (all physical cores)
    optimization: str = "all"  # disable | basic | extended | all
    # ORT's idle worker threads spin for a while after each run, which steals the cores of anything that
    # runs next in the same process (another session, preprocessing); False makes them sleep instead.
    spin: bool = True


_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class OrtRunner:
    """Runs a Model (or ONNX bytes/path) on ONNX Runtime's CPU provider."""

    backend = "ort"

    def __init__(self, model: Model | bytes | str, options: OrtOptions = OrtOptions()) -> None:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        if options.threads:
            session_options.intra_op_num_threads = options.threads
            session_options.inter_op_num_threads = 1
        if not options.spin:
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if options.optimization not in _LEVELS:
            raise BackendError(f"Unknown ORT optimization level {options.optimization!r}; use one of {list(_LEVELS)}.")
        session_options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[options.optimization])
        payload = model.serialize() if isinstance(model, Model) else model
        # Metadata says how the graph input is laid out (to-nhwc may make it NHWC uint8 BGR).
        self.metadata = dict(model.metadata) if isinstance(model, Model) else {}
        try:
            self.session = ort.InferenceSession(payload, session_options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for invalid graphs
            raise BackendError(f"ONNX Runtime cannot load the model: {str(exc).strip().splitlines()[0]}") from exc
        self.options = options
        self.inputs = self.session.get_inputs()
        self.input_names = [i.name for i in self.inputs]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feed: Mapping[str, np.ndarray] | np.ndarray) -> list[np.ndarray]:
        if isinstance(feed, np.ndarray):
            feed = {self.input_names[0]: feed}
        missing = set(self.input_names) - set(feed)
        if missing:
            raise DataError(f"Missing model inputs {sorted(missing)}; the model takes {self.input_names}.")
        return self.session.run(self.output_names, dict(feed))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The first output for an NCHW float RGB [0,1] batch (what evaluation makes), fed as the model takes it."""
        return self.run(input_from_nchw(self.metadata, images))[0]

    def benchmark(self, runs: int = 50, warmup: int = 5, seed: int = 0) -> LatencyStats:
        feed = random_feed(self.inputs, seed)
        return measure(lambda: self.session.run(self.output_names, feed), runs=runs, warmup=warmup,
                       backend=self.backend, threads=self.options.threads or None)


def random_feed(inputs, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for ORT NodeArg descriptions (float in [0,1), integers in [0,255])."""
    rng = np.random.default_rng(seed)
    feed = {}
    for arg in inputs:
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        if "uint8" in arg.type:
            feed[arg.name] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif "float16" in arg.type:
            feed[arg.name] = rng.random(shape, dtype=np.float32).astype(np.float16)
        else:
            feed[arg.name] = rng.random(shape, dtype=np.float32)
    return feed
