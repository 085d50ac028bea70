"""What a pipeline cost: accuracy and ONNX Runtime latency of a model before and after it.

Both models are measured in the same process, one right after the other, so the latency ratio is
a side-by-side number; the absolute milliseconds depend on the machine and its load.

Accuracy is the task's labelled measure where the images have labels (box mAP for detect, mask / OKS /
rotated-IoU mAP or top-1 for the other tasks) and, with ``agreement=True``, the label-free agreement of
the output model with the input model (its confident predictions as pseudo-labels; 1.0 = unchanged),
which needs no labels at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
    accuracy_metric: str | None = None  # what map50_95_* measure for a non-detect task (e.g. "mask mAP50-95")
    agreement: float | None = None  # the output model scored against the input model's predictions
    agreement_metric: str | None = None
    runtime_after: str = "ort"  # what ran the output model: ort, or the backend whose artifact was measured

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
                       f"({self.speedup:.2f}x, ort -> {self.runtime_after}, same run)")
        if self.map_drop_points is not None:
            out.append(f"{self.accuracy_metric or 'mAP50-95'} {self.map50_95_before:.4f} -> {self.map50_95_after:.4f} "
                       f"({-self.map_drop_points:+.2f} points on {self.images} images)")
        if self.agreement is not None:
            out.append(f"agreement with the input model {self.agreement:.4f} ({self.agreement_metric} against its "
                       f"predictions with score >= 0.25, {self.images} images; 1 = unchanged)")
        return out


def compare_models(before: Model, after: Model, *, bench_runs: int = 0, threads: int = 0,
                   data: Any = None, images: str | None = None, agreement: bool = False,
                   after_runner: Any = None, runtime_after: str = "ort") -> Comparison:
    """Latency (median over `bench_runs`) and accuracy on `data` (a dataset path or a list of images) of both
    models on ONNX Runtime; `after_runner` (a backend's runner of the compiled artifact, named by
    `runtime_after`) measures the output model as it will be deployed instead.

    Without `agreement` the images must be labelled (a DataError otherwise); with it, the output model's
    agreement with the input model is measured too and labels are optional.
    """
    runners = [OrtRunner(before, OrtOptions(threads=threads)),
               after_runner if after_runner is not None else OrtRunner(after, OrtOptions(threads=threads))]
    values: dict[str, Any] = {"runtime_after": runtime_after if after_runner is not None else "ort"}
    if bench_runs:
        stats = [r.benchmark(runs=bench_runs, warmup=max(2, bench_runs // 10)) for r in runners]
        values.update(latency_before_ms=stats[0].median_ms, latency_after_ms=stats[1].median_ms)
    if data is None:
        return Comparison(**values)
    from yolograph.evaluation import resolve_dataset
    from yolograph.evaluation.inference import TaskModel

    models = [TaskModel.open(r, name=name) for r, name in zip(runners, ("the input model", "the output model"))]
    if agreement:
        from yolograph.evaluation.fidelity import agreement as score_agreement

        score = score_agreement(models[1], models[0], data, images)
        values.update(agreement=score.value, agreement_metric=score.metric, images=score.images)
    task = models[0].task
    labelled = task == "classify" or _has_labels(resolve_dataset(data, images))
    if labelled or not agreement:  # without agreement, unlabelled images fail with the evaluator's DataError
        values.update(_labelled_scores(models, data, images))
    return Comparison(**values)


def _has_labels(dataset: Any) -> bool:
    return any(path.exists() and path.stat().st_size > 0 for path in dataset.label_paths)


def _labelled_scores(models: list[Any], data: Any, images: str | None) -> dict[str, Any]:
    from yolograph.evaluation import evaluate
    from yolograph.evaluation.fidelity import evaluate_task

    if models[0].task == "detect":  # the detect path, exactly as `yolograph eval` scores it
        scores = [evaluate(m.runner.predict, data, imgsz=m.imgsz, images=images) for m in models]
        return {"map50_95_before": scores[0].map50_95, "map50_95_after": scores[1].map50_95,
                "images": scores[0].images}
    task_scores = [evaluate_task(m, data, images) for m in models]
    return {"map50_95_before": task_scores[0].value, "map50_95_after": task_scores[1].value,
            "images": task_scores[0].images, "accuracy_metric": task_scores[0].metric}
