"""Latency measurement shared by every runner: warm-up, N timed runs, median and p90.

Comparing models: `interleaved_times` alternates callables in one process (fair under a varying
load, but ONNX Runtime and TVM thread pools keep spinning after a run and slow whatever runs next);
`isolated_times` times each model alone in a fresh process per turn (python -m
yolograph.runtime.timing), which is what the published speed ratios use.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from yolograph.errors import DataError
from yolograph.progress import track


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    backend: str
    threads: int | None = None

    def to_json(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        threads = f", {self.threads} threads" if self.threads else ""
        return (f"{self.backend}: median {self.median_ms:.2f} ms, p90 {self.p90_ms:.2f} ms "
                f"over {self.runs} runs{threads}")


def measure(call: Callable[[], object], *, runs: int, warmup: int, backend: str, threads: int | None = None) -> LatencyStats:
    """Time `call` `runs` times after `warmup` untimed calls."""
    if runs < 1:
        raise DataError(f"A benchmark needs at least 1 timed run, not {runs}; use runs=50 or so.")
    for _ in range(warmup):
        call()
    times = []
    for _ in track(range(runs), f"bench {backend}"):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    values = np.asarray(times)
    return LatencyStats(
        median_ms=float(np.median(values)),
        p90_ms=float(np.percentile(values, 90)),
        mean_ms=float(values.mean()),
        min_ms=float(values.min()),
        runs=runs,
        backend=backend,
        threads=threads,
    )


def interleaved_times(calls: dict[str, Callable[[], object]], *, rounds: int, runs: int = 1, warmup: int = 1,
                      clock: Callable[[], float] = time.perf_counter, turn_warmup: int = 1) -> dict[str, np.ndarray]:
    """Milliseconds of each call over `rounds` x `runs`, the variants taking turns every round.

    Alternating makes a side-by-side comparison fair on a loaded machine: a busy spell slows every
    variant alike. With runs=1 the arrays line up round by round (per-round ratios). `clock` may be
    time.thread_time to count the calling thread's CPU time instead of wall time.

    Each turn starts with `turn_warmup` untimed calls: ONNX Runtime's and TVM's thread pools keep
    spinning for tens of milliseconds after a run, and a variant timed during that spin loses a core
    (on 2 cores a TVM run right after an ORT run measured 57 ms instead of 24).
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in track(range(rounds), "interleaved latency"):
        for name, call in calls.items():
            for _ in range(turn_warmup):
                call()
            for _ in range(runs):
                start = clock()
                call()
                times[name].append((clock() - start) * 1e3)
    return {name: np.asarray(values) for name, values in times.items()}


# Untimed runs in each isolated process: a fresh TVM process needs ~5 runs to settle (yolov8n: the
# first measured ~27 ms, the rest 24 ms); ORT settles after one.
ISOLATED_WARMUP = 6


def isolated_times(models: dict[str, tuple[str, Path]], *, rounds: int, runs: int, threads: int = 0,
                   warmup: int = ISOLATED_WARMUP) -> dict[str, np.ndarray]:
    """Milliseconds of each model, timed alone in a fresh process per model and turn (`rounds` turns).

    models: name -> ("ort", model.onnx) or ("tvm", compiled artifact). `threads`: ORT intra-op
    threads (0: ORT's default); TVM uses the artifact's num-cores. Why separate processes: in one
    process, a TVM run right after an ORT run measured 57 ms instead of 24 (yolov8n, 2 cores), ORT
    33 ms instead of 28 next to a TVM runtime, and two alternating 2-thread ORT sessions 34 ms
    instead of 28.
    """
    times: dict[str, list[float]] = {name: [] for name in models}
    with tempfile.TemporaryDirectory() as temp:
        out = Path(temp) / "times.json"
        for _ in track(range(rounds), "isolated latency"):
            for name, (backend, path) in models.items():
                subprocess.run([sys.executable, "-m", "yolograph.runtime.timing", backend, str(path),
                                "--runs", str(runs), "--warmup", str(warmup), "--threads", str(threads),
                                "--out", str(out)], check=True)
                times[name].extend(json.loads(out.read_text()))
    return {name: np.asarray(values) for name, values in times.items()}


def _time_one_model(argv: list[str] | None = None) -> int:
    """The isolated process: load one model, warm up, write the timed runs (ms) as a JSON list."""
    parser = argparse.ArgumentParser(description="time one model alone (used by isolated_times)")
    parser.add_argument("backend")
    parser.add_argument("path", type=Path)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=ISOLATED_WARMUP)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from yolograph.runtime.backend import get_backend
    from yolograph.runtime.feeds import InputSpec, random_feed

    runner = get_backend(args.backend).load_runner(args.path, threads=args.threads)  # any artifact, as is
    specs = getattr(runner, "input_specs", None) or [InputSpec(i["name"], tuple(i["shape"]), i["dtype"])
                                                      for i in runner.inputs]
    feed = random_feed(specs)
    for _ in range(args.warmup):
        runner.run(feed)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        runner.run(feed)
        times.append((time.perf_counter() - start) * 1e3)
    args.out.write_text(json.dumps(times))
    return 0


def summarize_ms(times: np.ndarray) -> dict[str, float | int]:
    """Median, p90 and count of a latency sample in milliseconds."""
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "runs": int(len(times))}


if __name__ == "__main__":
    raise SystemExit(_time_one_model())
