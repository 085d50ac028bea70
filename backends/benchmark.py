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
