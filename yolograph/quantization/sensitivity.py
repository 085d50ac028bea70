"""Per-layer quantization sensitivity: the error each quantized Conv introduces on its own.

A *unit* is one quantized Conv: its int8 weights (and int32 bias), the Q/DQ on its input activation and,
when the Conv's output is requantized directly (QLinearConv), the Q/DQ on its output. For each unit the
float model is given only that unit's quantization (the calibrated scales and int8 weights) and run on
a few images: the SQNR of the model outputs (boxes, scores) against float says how much that layer
costs the detector, the SQNR of the Conv's own output how much it costs locally. Optionally, mAP on a
small labelled subset.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.errors import PipelineError
from yolograph.ir.graph_view import constant_value
from yolograph.ir.model import Model
from yolograph.runtime.ort import PASS_THREADS, OrtOptions, OrtRunner
from yolograph.pipeline.passes import sqnr_db
from yolograph.pipeline.verify import output_groups
from yolograph.progress import track
from yolograph.quantization.qdq import is_weight_q, quantized_convs


@dataclass(frozen=True)
class Unit:
    """One quantized Conv and the activation tensors whose Q/DQ belong to it."""

    name: str
    op: str
    tensors: tuple[str, ...]


@dataclass
class LayerSensitivity:
    name: str
    op: str
    output_sqnr_db: float  # min over output groups (boxes, scores)
    boxes_sqnr_db: float
    scores_sqnr_db: float
    own_sqnr_db: float
    map50_95: float | None = None


@dataclass
class SensitivityReport:
    layers: list[LayerSensitivity]
    full_output_sqnr_db: float  # every unit quantized (the whole pipeline's model)
    float_map50_95: float | None = None
    quantized_map50_95: float | None = None
    images: str = ""
    pipeline: str = ""
    extra: dict = field(default_factory=dict)

    def ranked(self) -> list[LayerSensitivity]:
        """Most sensitive first (lowest model-output SQNR)."""
        return sorted(self.layers, key=lambda r: r.output_sqnr_db)

    def table(self) -> str:
        has_map = any(r.map50_95 is not None for r in self.layers)
        head = f"{'#':>3}  {'layer':<44} {'op':<6} {'out dB':>7} {'boxes':>7} {'scores':>7} {'own dB':>7}"
        lines = [head + ("  mAP50-95" if has_map else "")]
        for rank, r in enumerate(self.ranked(), 1):
            line = (f"{rank:>3}  {r.name[-44:]:<44} {r.op:<6} {r.output_sqnr_db:>7.1f} {r.boxes_sqnr_db:>7.1f} "
                    f"{r.scores_sqnr_db:>7.1f} {r.own_sqnr_db:>7.1f}")
            if has_map:
                line += f"  {r.map50_95:.4f}" if r.map50_95 is not None else "  -"
            lines.append(line)
        summary = f"all layers quantized: output SQNR {self.full_output_sqnr_db:.1f} dB"
        if self.float_map50_95 is not None and self.quantized_map50_95 is not None:
            summary += f"; mAP50-95 float {self.float_map50_95:.4f}, int8 {self.quantized_map50_95:.4f}"
        return "\n".join([*lines, summary])

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "pipeline": self.pipeline,
            "full_output_sqnr_db": self.full_output_sqnr_db,
            "float_map50_95": self.float_map50_95,
            "quantized_map50_95": self.quantized_map50_95,
            "layers": [asdict(r) for r in self.ranked()],
            **self.extra,
        }

    def write_plot(self, path: str | Path) -> Path:
        """A bar chart of per-layer output and own SQNR (graph order), written atomically as PNG."""
        from yolograph.inspection.plot import new_figure, save_png

        names = [r.name for r in self.layers]
        x = np.arange(len(names))
        fig, ax = new_figure(len(names))
        ax.bar(x - 0.2, [r.output_sqnr_db for r in self.layers], 0.4, label="model output SQNR (dB)")
        ax.bar(x + 0.2, [r.own_sqnr_db for r in self.layers], 0.4, label="own output SQNR (dB)")
        ax.axhline(self.full_output_sqnr_db, color="k", lw=0.8, ls="--", label="all layers quantized")
        ax.set_xticks(x, [n.replace("/conv/Conv", "").replace("/Conv", "") for n in names], rotation=90, fontsize=6)
        ax.set_ylabel("SQNR (dB), higher is better")
        ax.set_title("INT8 sensitivity per quantized Conv (only that layer quantized)")
        ax.legend(fontsize=7)
        return save_png(fig, path)


def quantization_units(quantized: Model) -> list[Unit]:
    """The units of a Q/DQ model (calibrated or not), in graph order."""
    units = []
    for item in quantized_convs(quantized):
        conv = item.conv
        tensors = []
        source = _activation_q_source(conv.inputs[0])
        if source is not None:
            tensors.append(source)
        output = conv.outputs[0]
        if any(c.op == "QuantizeLinear" for c in output.outputs):
            tensors.append(output.name)
        units.append(Unit(conv.name, conv.op, tuple(tensors)))
    return units


def _activation_q_source(tensor: gs.Tensor) -> str | None:
    if tensor.inputs and tensor.inputs[0].op == "DequantizeLinear":
        quantized = tensor.inputs[0].inputs[0]
        if quantized.inputs and quantized.inputs[0].op == "QuantizeLinear":
            return quantized.inputs[0].inputs[0].name
    return None


def _activation_params(quantized: Model) -> dict[str, tuple[gs.Constant, gs.Constant]]:
    """Float tensor name -> (scale, zero point) of the activation Q node that quantizes it."""
    params = {}
    for node in quantized.graph.nodes:
        if node.op == "QuantizeLinear" and not is_weight_q(node):
            params[node.inputs[0].name] = (node.inputs[1], node.inputs[2])
    return params


def _dequantized_conv_params(quantized: Model) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Conv name -> (weight as the int8 model computes it, bias likewise)."""
    from yolograph.quantization.profiles import get_profile
    from yolograph.quantization.qdq import PROFILE_KEY, fake_quantize_weight

    qmax = get_profile(quantized.metadata.get(PROFILE_KEY, "ort-cpu")).weight_qmax
    result = {}
    for item in quantized_convs(quantized):
        if item.weight_q is not None:
            weight = fake_quantize_weight(item.float_weight(), item.scales, qmax)
        else:
            ints = np.asarray(constant_value(item.weight_dq.inputs[0]), dtype=np.float32)
            weight = ints * item.scales.reshape((-1,) + (1,) * (ints.ndim - 1))
        result[item.conv.name] = (weight.astype(np.float32), item.bias())
    return result


def apply_units(float_model: Model, quantized: Model, units: Sequence[Unit], extra_outputs: Sequence[str] = ()) -> Model:
    """A copy of `float_model` with only `units` quantized as in `quantized` (same node/tensor names)."""
    work = float_model.copy()
    graph = work.graph
    params = _activation_params(quantized)
    conv_params = _dequantized_conv_params(quantized)
    nodes = {n.name: n for n in graph.nodes}
    tensors = graph.tensors()
    for unit in units:
        conv = nodes.get(unit.name)
        if conv is None:
            raise PipelineError(f"The float model has no node {unit.name!r}; sensitivity needs the same node names.")
        weight, bias = conv_params[unit.name]
        conv.inputs[1] = gs.Constant(f"{unit.name}.sensitivity_weight", weight)
        if bias is not None:
            constant = gs.Constant(f"{unit.name}.sensitivity_bias", bias)
            if len(conv.inputs) > 2:
                conv.inputs[2] = constant
            else:
                conv.inputs.append(constant)
        for name in unit.tensors:
            if name in params and name in tensors:
                _fake_quantize(graph, tensors[name], *params[name])
    for name in extra_outputs:
        tensor = graph.tensors()[name]
        if tensor not in graph.outputs:
            tensor.dtype = tensor.dtype or np.float32
            graph.outputs.append(tensor)
    graph.cleanup().toposort()
    work.invalidate()
    return work


def _fake_quantize(graph: gs.Graph, tensor: gs.Variable, scale: gs.Constant, zero_point: gs.Constant) -> None:
    scale = gs.Constant(f"{tensor.name}_sens_scale", np.asarray(scale.values))
    zero_point = gs.Constant(f"{tensor.name}_sens_zero", np.asarray(zero_point.values))
    quantized = gs.Variable(f"{tensor.name}_sens_q", dtype=zero_point.values.dtype)
    dequantized = gs.Variable(f"{tensor.name}_sens_dq", dtype=np.float32)
    consumers = list(tensor.outputs)
    for consumer in consumers:
        for index, value in enumerate(consumer.inputs):
            if value is tensor:
                consumer.inputs[index] = dequantized
    graph.nodes.append(gs.Node("QuantizeLinear", f"{tensor.name}_sens_Q", inputs=[tensor, scale, zero_point], outputs=[quantized]))
    graph.nodes.append(gs.Node("DequantizeLinear", f"{tensor.name}_sens_DQ", inputs=[quantized, scale, zero_point], outputs=[dequantized]))


def _run(model: Model, inputs: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[list[np.ndarray]]:

    runner = OrtRunner(model, OrtOptions(threads=PASS_THREADS))
    wanted = list(names) if names else runner.output_names
    return [runner.session.run(wanted, {runner.input_names[0]: x}) for x in inputs]


def group_sqnr(model: Model, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> list[float]:
    """SQNR per output group (boxes, scores) over all images."""
    ref = [output_groups(model, outs[: len(model.graph.outputs)]) for outs in reference]
    new = [output_groups(model, outs[: len(model.graph.outputs)]) for outs in candidate]
    return [sqnr_db(np.concatenate([r[g] for r in ref]), np.concatenate([n[g] for n in new])) for g in range(len(ref[0]))]


def measure_units(float_model: Model, quantized: Model, units: Sequence[Unit], inputs: Sequence[np.ndarray],
                  label: str = "sensitivity") -> list[LayerSensitivity]:
    """Per-unit sensitivity rows (see the module docstring)."""
    out_names = [t.name for t in float_model.graph.outputs]
    conv_outputs = {n.name: n.outputs[0].name for n in float_model.graph.nodes if n.op == "Conv"}
    probe = apply_units(float_model, quantized, [], extra_outputs=[conv_outputs[u.name] for u in units])
    reference = _run(probe, inputs, out_names + [conv_outputs[u.name] for u in units])
    rows = []
    for index, unit in enumerate(track(units, label)):
        own = conv_outputs[unit.name]
        variant = apply_units(float_model, quantized, [unit], extra_outputs=[own])
        result = _run(variant, inputs, out_names + [own])
        groups = group_sqnr(float_model, [r[: len(out_names)] for r in reference], [r[: len(out_names)] for r in result])
        own_ref = np.concatenate([r[len(out_names) + index] for r in reference])
        own_new = np.concatenate([r[len(out_names)] for r in result])
        boxes, scores = (groups + [float("inf")] * 2)[:2]
        rows.append(LayerSensitivity(unit.name, unit.op, float(min(groups)), float(boxes), float(scores),
                                     float(sqnr_db(own_ref, own_new))))
    return rows


def split_pipeline(pipeline: str) -> tuple[str, str, str]:
    """(float part before insert-qdq, insert-qdq .. before calibrate, calibrate and after)."""
    from yolograph.pipeline.parse import _split_top_level

    steps = _split_top_level(pipeline)
    names = [s.split("{", 1)[0].strip() for s in steps]
    if "insert-qdq" not in names or "calibrate" not in names:
        raise PipelineError(f"The pipeline {pipeline!r} needs insert-qdq and calibrate to be a quantization pipeline.")
    q, c = names.index("insert-qdq"), names.index("calibrate")
    return ",".join(steps[:q]), ",".join(steps[q:c]), ",".join(steps[c:])


def run_sensitivity(
    model: Model,
    data: str | Path,
    images: str = "0:8",
    pipeline: str | None = None,
    plot: Path | None = None,
    map_images: str | None = None,
    layers: Sequence[str] | None = None,
) -> SensitivityReport:
    """Quantize `model` with `pipeline` (default: the recommended ort-cpu pipeline calibrated on the first
    32 images of `data`), then measure every quantized layer on `images` of `data` (see module docstring).

    map_images: also score mAP50-95 of each single-layer model on these images (slow). layers: only these
    Conv names. plot: write a PNG bar chart there.
    """
    from yolograph.pipeline import run_pipeline
    from yolograph.quantization import default_int8_pipeline
    from yolograph.evaluation.calibration_data import load_calibration_tensors

    pipeline = pipeline or default_int8_pipeline(str(data))
    float_part, qdq_part, calibrate_part = split_pipeline(pipeline.replace("IMAGES", str(data)))
    float_model = run_pipeline(model, float_part)[0] if float_part else model.copy()
    quantized = run_pipeline(run_pipeline(float_model, qdq_part)[0], calibrate_part)[0]
    units = quantization_units(quantized)
    if layers:
        missing = set(layers) - {u.name for u in units}
        if missing:
            raise PipelineError(f"No quantized layer named {sorted(missing)}; use the names `sensitivity` lists.")
        units = [u for u in units if u.name in set(layers)]
    shape = float_model.inputs[0].shape
    inputs = list(load_calibration_tensors(data, None, (shape[2], shape[3]), image_range=images))
    rows = measure_units(float_model, quantized, units, inputs)
    full = group_sqnr(float_model, _run(float_model, inputs), _run(quantized, inputs))
    report = SensitivityReport(rows, float(min(full)), images=images, pipeline=pipeline)
    if map_images:
        from yolograph.evaluation import evaluate

        def score(m: Model) -> float:
            return evaluate(OrtRunner(m, OrtOptions(threads=PASS_THREADS)).predict, data, images=map_images).map50_95

        report.float_map50_95 = score(float_model)
        report.quantized_map50_95 = score(quantized)
        for row, unit in zip(rows, units):
            row.map50_95 = score(apply_units(float_model, quantized, [unit]))
    if plot is not None:
        report.write_plot(plot)
    return report


def write_report_json(report: SensitivityReport, path: str | Path) -> None:
    from yolograph.ir.serialization import write_bytes_atomic

    write_bytes_atomic(Path(path), json.dumps(report.to_json(), indent=2).encode())
