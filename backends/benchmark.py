"""Latency measurement shared by every backend: warm-up, N timed runs, median and p90."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

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
        raise ValueError("runs must be at least 1")
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


def summarize_ms(times: np.ndarray) -> dict[str, float | int]:
    """Median, p90 and count of a latency sample in milliseconds."""
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "runs": int(len(times))}
