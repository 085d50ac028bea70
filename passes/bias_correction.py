"""bias-correction: cancel the mean output shift that weight rounding causes, per output channel.

Rounding a Conv's weights to int8 changes its output by dW * x. Averaged over data that is
dW . E[x] per output channel, a systematic shift that the next layers and the detector's thresholds
feel even when the noise averages out (Nagel et al., "Data-Free Quantization", empirical variant).
This pass measures E[x] per input channel of every quantized Conv on calibration data (in float, one
image at a time) and subtracts sum_{c,taps} dW[o,c,taps] * E[x_c] from the bias.

Runs between insert-qdq and calibrate (it needs the float weights and their per-channel scales; the
rounding is recomputed exactly as calibrate will do it). Changes accuracy on purpose: deferred contract,
judged with calibrate's SQNR floor at the next checked pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yolograph.errors import PassError
from yolograph.ir.model import Model
from yolograph.pipeline.passes import Contract, Pass, PassResult, register_pass
from yolograph.evaluation.calibration_data import CalibrationSource
from yolograph.pipeline.context import PassContext
from yolograph.quantization.collect import model_input_size, stream_tensors
from yolograph.quantization.profiles import get_profile
from yolograph.quantization.qdq import PROFILE_KEY, fake_quantize_weight, quantized_convs, strip_activation_qdq


@dataclass(frozen=True)
class BiasCorrectionOptions(CalibrationSource):
    """images= (dataset root, image folder or yaml; the first count= or range=A:B) or npy= tensors."""


@register_pass("bias-correction")
class BiasCorrection(Pass):
    """Subtract each quantized Conv's mean weight-rounding error (dW . E[x]) from its bias."""

    Options = BiasCorrectionOptions
    contract = Contract.deferred("accuracy technique; checked with calibrate's SQNR floor")
    requires = frozenset({"qdq"})

    def validate(self) -> None:
        self.options.require("bias-correction")

    def run(self, model: Model) -> PassResult:
        convs = [c for c in quantized_convs(model) if c.weight_q is not None]
        if not convs:
            raise PassError("bias-correction needs float weights behind Q/DQ: run it after insert-qdq and before calibrate.")
        profile = get_profile(model.metadata.get(PROFILE_KEY, "ort-cpu"))
        source = self.options.require("bias-correction")
        inputs = {c.conv.name: conv_input_source(c.conv) for c in convs}
        means = channel_means(model, sorted(set(inputs.values())), source)
        shifts = []
        for item in convs:
            mean = means[inputs[item.conv.name]]
            weight = item.float_weight()
            error = fake_quantize_weight(weight, item.scales, profile.weight_qmax) - weight
            if int(item.conv.attrs.get("group", 1)) != 1:
                continue  # grouped convs: the per-group channel mapping is not handled here
            shift = np.einsum("ockl,c->o", error.astype(np.float64), mean)
            bias = item.bias()
            base = np.zeros(weight.shape[0], np.float32) if bias is None else bias
            item.set_bias((base - shift).astype(np.float32))
            shifts.append(float(np.abs(shift).max()))
        model.graph.cleanup()
        return PassResult(changed=True, stats={"corrected": len(shifts), "max_shift": max(shifts, default=0.0)})


def conv_input_source(conv) -> str:
    """The float tensor a quantized Conv's input DQ comes from (the Q input), else the input itself."""
    tensor = conv.inputs[0]
    if tensor.inputs and tensor.inputs[0].op == "DequantizeLinear":
        quantized = tensor.inputs[0].inputs[0]
        if quantized.inputs and quantized.inputs[0].op == "QuantizeLinear":
            return quantized.inputs[0].inputs[0].name
    return tensor.name


def channel_means(model: Model, tensors: list[str], source: CalibrationSource) -> dict[str, np.ndarray]:
    """Per-channel means (axis 1) of `tensors`, computed in float over the calibration data."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def visit(name: str, value: np.ndarray) -> None:
        flat = value.reshape(value.shape[0], value.shape[1], -1)
        sums[name] = sums.get(name, 0) + flat.sum(axis=(0, 2), dtype=np.float64)
        counts[name] = counts.get(name, 0) + flat.shape[0] * flat.shape[2]

    stats_model = strip_activation_qdq(model, keep_outputs=tensors)
    context = PassContext.current()
    stream_tensors(stats_model, tensors, context.calibration_tensors(source, model_input_size(model)), visit,
                   label="bias-correction", threads=context.threads)
    return {name: sums[name] / counts[name] for name in tensors}
