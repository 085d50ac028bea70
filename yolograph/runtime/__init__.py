"""Running models: the ONNX Runtime reference executor, input feeds, latency measurement, the backend API.

Core infrastructure: the pass manager, calibration, pruning and evaluation run models through
`OrtRunner`; `backend` holds the registry compiled backends plug into.
"""

from yolograph.runtime.feeds import Feed, InputSpec, as_feed, random_feed
from yolograph.runtime.ort import PASS_THREADS, OrtOptions, OrtRunner
from yolograph.runtime.timing import LatencyStats, interleaved_times, isolated_times, measure, summarize_ms

__all__ = [
    "Feed",
    "InputSpec",
    "LatencyStats",
    "OrtOptions",
    "OrtRunner",
    "PASS_THREADS",
    "as_feed",
    "interleaved_times",
    "isolated_times",
    "measure",
    "random_feed",
    "summarize_ms",
]
