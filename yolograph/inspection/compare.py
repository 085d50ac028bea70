"""What a pipeline cost: accuracy and ONNX Runtime latency of a model before and after it.

Both models are measured in the same process, one right after the other, so the latency ratio is
a side-by-side number; the absolute milliseconds depend on the machine and its load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from yolograph.ir.model import Model
from yolograph.runtime.ort import OrtOptions, OrtRunner


@dataclass(frozen=True)
class Comparison:
    latency_before_ms: float | None = None
    latency_after_ms: float | None = None
    map50_95_before: float | None = None
    map50_95_after: float | None = None
    images: int | None = None

    @property
    def speedup(self) -> float | None:
        if self.latency_before_ms and self.latency_after_ms:
            return self.latency_before_ms / self.latency_after_ms
        return None

    @property
    def map_drop_points(self) -> float | None:
        if self.map50_95_before is None or self.map50_95_after is None:
            return None
        return 100.0 * (self.map50_95_before - self.map50_95_after)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup, "map_drop_points": self.map_drop_points}

    def lines(self) -> list[str]:
        out = []
        if self.speedup is not None:
            out.append(f"latency  {self.latency_before_ms:.2f} -> {self.latency_after_ms:.2f} ms median "
                       f"({self.speedup:.2f}x, ort, same run)")
        if self.map_drop_points is not None:
            out.append(f"mAP50-95 {self.map50_95_before:.4f} -> {self.map50_95_after:.4f} "
                       f"({-self.map_drop_points:+.2f} points on {self.images} images)")
        return out


def compare_models(before: Model, after: Model, *, bench_runs: int = 0, threads: int = 0,
                   data: str | Path | None = None, images: str | None = None) -> Comparison:
    """Latency (median over `bench_runs`) and mAP50-95 on `data` of both models on ONNX Runtime."""

    runners = [OrtRunner(m, OrtOptions(threads=threads)) for m in (before, after)]
    values: dict[str, Any] = {}
    if bench_runs:
        stats = [r.benchmark(runs=bench_runs, warmup=max(2, bench_runs // 10)) for r in runners]
        values.update(latency_before_ms=stats[0].median_ms, latency_after_ms=stats[1].median_ms)
    if data is not None:
        from yolograph.evaluation import evaluate, open_dataset, parse_index_range

        dataset = open_dataset(data)
        selection = parse_index_range(images)
        scores = [evaluate(r.predict, dataset, imgsz=before.facts.imgsz or (640, 640), images=selection)
                  for r in runners]
        values.update(map50_95_before=scores[0].map50_95, map50_95_after=scores[1].map50_95,
                      images=scores[0].images)
    return Comparison(**values)
