"""The ONNX Runtime reference executor: what every pass is verified on and every backend compared against.

Core infrastructure, not a backend among others: the pass manager, calibration, pruning and evaluation
run models through it. The `ort` backend (backends/ort.py) only writes the ONNX file this runner loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yolograph.errors import BackendError
from yolograph.ir.model import Model
from yolograph.layout.io import input_from_nchw
from yolograph.runtime.feeds import Feed, InputSpec, as_feed, random_feed
from yolograph.runtime.timing import LatencyStats, measure


# The threads of the float runs passes and libraries make (calibration, sensitivity, reconstruction):
# a fixed count keeps their statistics reproducible across machines, since ORT's reductions split by thread.
PASS_THREADS = 2


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
        self.input_specs = [InputSpec(i.name, tuple(d if isinstance(d, int) else 1 for d in i.shape),
                                      _ORT_DTYPES.get(i.type, "float32")) for i in self.inputs]
        self.imgsz = model.facts.imgsz if isinstance(model, Model) and model.facts.imgsz else (640, 640)

    def run(self, feed: Feed | np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, as_feed(feed, self.input_names))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The first output for an NCHW float RGB [0,1] batch (what evaluation makes), fed as the model takes it."""
        return self.run(input_from_nchw(self.metadata, images))[0]

    def benchmark(self, runs: int = 50, warmup: int = 5, seed: int = 0) -> LatencyStats:
        feed = random_feed(self.input_specs, seed)
        return measure(lambda: self.session.run(self.output_names, feed), runs=runs, warmup=warmup,
                       backend=self.backend, threads=self.options.threads or None)


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
               "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64"}
