"""The pipeline report: everything a pipeline did to a model, measured, as one self-contained HTML file.

`build_report` gathers the sections (each only where it applies):

- the pipeline and its per-pass table (time, nodes, params, MACs, contract, verified) from PipelineReport;
- the graph diff (ops added/removed, conv widths) from yolograph.inspection.diff;
- per-layer quantization error (every Conv's output SQNR against the float model) and sensitivity
  (each quantized Conv alone, yolograph.quantization.sensitivity), for pipelines that quantize;
- pruning ratios per layer, for pipelines that change conv widths;
- latency before/after on ONNX Runtime, and of the backend artifact where one was built;
- accuracy before/after: mAP50-95 on labelled images, and label-free agreement with the input model;
- a few images predicted by the input and the output model, side by side.

`render_html` (yolograph.inspection.report_html) turns it into a page with every image inline, so the
file opens anywhere without a network. Measurements are side by side in one process: the latency
ratio is meaningful, the absolute milliseconds depend on the machine and its load.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yolograph.ir.model import Model
from yolograph.pipeline.manager import PipelineReport
from yolograph.progress import track

# Images sensitivity runs every quantized layer on (each layer is one more model run per image).
DEFAULT_SENSITIVITY_IMAGES = "32:34"
DEFAULT_PREDICT_IMAGES = 3


@dataclass
class ReportOptions:
    """What to measure. data: images for accuracy, per-layer error and predictions (labels optional)."""

    data: str | Path | None = None
    eval_images: str | None = None  # index range A:B of `data` for accuracy; None: no accuracy section
    bench_runs: int = 0  # 0: no latency section
    predict_images: int = DEFAULT_PREDICT_IMAGES
    sensitivity_images: str | None = DEFAULT_SENSITIVITY_IMAGES  # None: no sensitivity section
    threads: int = 0
    title: str | None = None

    def __post_init__(self) -> None:
        if self.bench_runs < 0 or self.predict_images < 0:
            raise ValueError("bench_runs and predict_images must be 0 or more")


@dataclass
class Report:
    """The sections of a pipeline report (JSON-able values, images as PNG/JPEG bytes)."""

    title: str
    source: str
    pipeline: str
    target: str | None
    backend: str
    artifact: str | None
    passes: dict[str, Any]
    diff: dict[str, Any]
    layer_error: list[dict] = field(default_factory=list)
    sensitivity: dict | None = None
    pruning: dict[str, list[int]] = field(default_factory=dict)
    latency: list[dict] = field(default_factory=list)
    accuracy: list[dict] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)  # name -> PNG
    predictions: list[tuple[str, bytes]] = field(default_factory=list)  # (image name, JPEG)
    notes: list[str] = field(default_factory=list)


def build_report(before: Model, after: Model, pipeline_report: PipelineReport, pipeline: str, *,
                 options: ReportOptions | None = None, backend: str = "ort", target: str | None = None,
                 artifact: Path | None = None, source: str | None = None) -> Report:
    """Measure `after` against `before` (the pipeline's input) and gather every section."""
    from yolograph.inspection.diff import diff_models

    options = options or ReportOptions()
    diff = diff_models(before, after)
    report = Report(title=options.title or f"yolograph report: {target or 'pipeline'} on {source or 'the model'}",
                    source=source or "the model", pipeline=pipeline, target=target, backend=backend,
                    artifact=str(artifact) if artifact else None, passes=pipeline_report.to_json(), diff=diff)
    report.pruning = {name: widths for name, widths in diff["conv_channels"].items() if widths[0] != widths[1]}
    if report.pruning:
        report.figures["pruning"] = _plot_bytes(lambda path: _channel_plot(diff, path))
    steps = list(track(["quantization error", "latency", "accuracy", "predictions"], "report"))
    for step in steps:
        if step == "quantization error" and _is_quantized(after) and options.data is not None:
            _quantization_sections(report, before, after, pipeline, options)
        elif step == "latency" and options.bench_runs:
            _latency_section(report, before, after, backend, artifact, options)
        elif step == "accuracy" and options.data is not None and options.eval_images:
            _accuracy_section(report, before, after, options)
        elif step == "predictions" and options.data is not None and options.predict_images:
            _prediction_section(report, before, after, backend, artifact, options)
    return report


def write_html_report(path: str | Path, report: Report) -> Path:
    """Render `report` and write it atomically (never a half-written page)."""
    from yolograph.inspection.report_html import render_html
    from yolograph.ir.serialization import write_bytes_atomic

    path = Path(path)
    write_bytes_atomic(path, render_html(report).encode("utf-8"))
    return path


# -- sections ---------------------------------------------------------------------------------------


def _is_quantized(model: Model) -> bool:
    return bool(model.nodes_by_op("QuantizeLinear"))


def _float_reference(before: Model, pipeline: str) -> Model:
    """The model as the pipeline had it just before quantization (same node names as the output)."""
    from yolograph.pipeline import run_pipeline
    from yolograph.quantization.sensitivity import split_pipeline

    float_part = split_pipeline(pipeline)[0]
    return run_pipeline(before, float_part)[0] if float_part else before.copy()


def _quantization_sections(report: Report, before: Model, after: Model, pipeline: str, options: ReportOptions) -> None:
    from yolograph.errors import PipelineError
    from yolograph.inspection.layer_error import layer_errors

    try:
        reference = _float_reference(before, pipeline)
    except PipelineError:  # Q/DQ came from elsewhere (e.g. a quantized input model): compare with the input
        reference = before
    images = options.sensitivity_images or options.eval_images or "0:2"
    inputs = _tensors(options.data, images, after)
    rows = layer_errors(reference, after, inputs)
    report.layer_error = [r.to_json() for r in rows]
    if rows:
        report.figures["layer_error"] = _plot_bytes(lambda path: _layer_error_plot(rows, path))
    if options.sensitivity_images is None:
        return
    from yolograph.quantization.sensitivity import SensitivityReport, group_sqnr, measure_units, quantization_units

    units = [u for u in quantization_units(after) if u.name in {n.name for n in reference.graph.nodes}]
    if not units:
        return
    layers = measure_units(reference, after, units, inputs, label="report: sensitivity")
    from yolograph.quantization.sensitivity import _run as run_outputs

    full = group_sqnr(reference, run_outputs(reference, inputs), run_outputs(after, inputs))
    sensitivity = SensitivityReport(layers, float(min(full)), images=images, pipeline=pipeline)
    report.sensitivity = sensitivity.to_json()
    report.figures["sensitivity"] = _plot_bytes(sensitivity.write_plot)


def _latency_section(report: Report, before: Model, after: Model, backend: str, artifact: Path | None,
                     options: ReportOptions) -> None:
    from yolograph.inspection.compare import compare_models

    comparison = compare_models(before, after, bench_runs=options.bench_runs, threads=options.threads)
    report.latency.append({"backend": "ort", "model": "input", "median_ms": comparison.latency_before_ms})
    report.latency.append({"backend": "ort", "model": "output", "median_ms": comparison.latency_after_ms})
    if artifact is not None and backend != "ort":
        from yolograph.runtime.backend import get_backend

        runner = get_backend(backend).load_runner(Path(artifact), threads=options.threads)
        stats = runner.benchmark(runs=options.bench_runs, warmup=max(2, options.bench_runs // 10))
        report.latency.append({"backend": backend, "model": "output", "median_ms": stats.median_ms})
    base = comparison.latency_before_ms
    for row in report.latency:
        row["speedup"] = base / row["median_ms"] if base and row["median_ms"] else None
    report.figures["latency"] = _plot_bytes(lambda path: _latency_plot(report.latency, path))
    report.notes.append(f"Latency: median of {options.bench_runs} runs per model, measured one after the other "
                        "in this process (a side-by-side ratio; absolute times depend on the machine's load).")


def _accuracy_section(report: Report, before: Model, after: Model, options: ReportOptions) -> None:
    from yolograph.inspection.compare import compare_models

    comparison = compare_models(before, after, data=options.data, images=options.eval_images,
                                threads=options.threads, agreement=True)
    if comparison.map50_95_before is not None:
        report.accuracy.append({"measure": f"{comparison.accuracy_metric or 'mAP50-95'} (labels)",
                                "before": comparison.map50_95_before, "after": comparison.map50_95_after,
                                "images": comparison.images})
    else:
        report.notes.append("The evaluation images have no labels: accuracy is the label-free agreement only.")
    report.accuracy.append({"measure": f"agreement with the input model ({comparison.agreement_metric})",
                            "before": None, "after": comparison.agreement, "images": comparison.images,
                            "reference": True})


def _prediction_section(report: Report, before: Model, after: Model, backend: str, artifact: Path | None,
                        options: ReportOptions) -> None:
    import cv2

    from yolograph.evaluation.fidelity import image_paths
    from yolograph.evaluation.inference import TaskModel
    from yolograph.evaluation.preprocess import read_image
    from yolograph.inspection.draw import draw_predictions, side_by_side

    images = options.eval_images or f"0:{options.predict_images}"
    paths = image_paths(options.data, images)[: options.predict_images]
    left = TaskModel.open(before, threads=options.threads, name="input model")
    if artifact is not None and backend != "ort":
        right = TaskModel.open(str(artifact), backend=backend, threads=options.threads, name=f"output ({backend})")
    else:
        right = TaskModel.open(after, threads=options.threads, name="output model")
    for path in paths:
        image = read_image(path)
        picture = side_by_side(draw_predictions(image, left.predict(image), left.layout),
                               draw_predictions(image, right.predict(image), right.layout),
                               (left.source, right.source))
        ok, encoded = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            report.predictions.append((Path(path).name, encoded.tobytes()))


def _tensors(data: str | Path, images: str, model: Model) -> list[np.ndarray]:
    from yolograph.evaluation.calibration_data import load_calibration_tensors

    shape = model.inputs[0].shape
    return list(load_calibration_tensors(data, None, (int(shape[2]), int(shape[3])), image_range=images))


# -- figures ----------------------------------------------------------------------------------------


def _plot_bytes(write) -> bytes:
    """PNG bytes of a figure drawn by `write(path)` (the inspection plots write files atomically)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "figure.png"
        write(path)
        return path.read_bytes()


def _channel_plot(diff: dict[str, Any], path: Path) -> None:
    from yolograph.inspection.diff import write_channel_plot

    write_channel_plot(diff, path)


def _short(name: str) -> str:
    return name.replace("/conv/Conv", "").replace("/Conv", "")


def _layer_error_plot(rows, path: Path) -> None:
    from yolograph.inspection.plot import new_figure, save_png

    fig, ax = new_figure(len(rows))
    x = np.arange(len(rows))
    values = [min(r.sqnr_db, 80.0) for r in rows]
    ax.bar(x, values, 0.8, color="tab:blue")
    ax.set_xticks(x, [_short(r.name) for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("SQNR (dB) vs float, higher is better")
    ax.set_title("Per-layer error: each Conv's output in the output model against the float model (accumulated)")
    save_png(fig, path)


def _latency_plot(rows: list[dict], path: Path) -> None:
    from yolograph.inspection.plot import new_figure, save_png

    fig, ax = new_figure(len(rows))
    fig.set_size_inches(8, 1.2 + 0.6 * len(rows))
    labels = [f"{r['model']} ({r['backend']})" for r in rows]
    ax.barh(labels, [r["median_ms"] for r in rows], color=["tab:gray"] + ["tab:green"] * (len(rows) - 1))
    for index, row in enumerate(rows):
        ax.text(row["median_ms"], index, f" {row['median_ms']:.1f} ms", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median latency (ms), lower is better")
    save_png(fig, path)

