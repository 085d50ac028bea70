"""calibrate: set activation scales of a Q/DQ model from calibration data, then fold weights to int8.

Runs the model in float (activation Q/DQ bypassed) with ONNX Runtime on calibration images (letterboxed
exactly as evaluation does) or .npy tensors, streaming one image at a time into fixed-size observers
(min/max + zero-anchored histogram), so memory does not grow with the image count and results do not
depend on timing. The range method (minmax, percentile, entropy, mse) picks each tensor's clipping
range (the head's final logits always keep min/max: their tail is the detections); tensors sharing a
scale take the union. Then weight Q nodes are folded into int8 initializers and,
for profiles that want it (ort-cpu, tvm), Conv biases become int32 with scale = input x weight scale.

Contract: changes accuracy on purpose; output SQNR against the float model (before insert-qdq) stays
>= 5 dB on each output group (boxes, scores) on the verifier's inputs (see the comment on
CALIBRATE_MIN_SQNR_DB for how that floor was measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from yolograph.ir.model import Model
from yolograph.pipeline.context import PassContext
from yolograph.pipeline.passes import Contract, Pass, PassResult, register_pass
from yolograph.pipeline.properties import UNCALIBRATED_KEY
from yolograph.evaluation.calibration_data import CalibrationSource
from yolograph.quantization.collect import model_input_size, stream_tensors
from yolograph.quantization.observers import RangeObserver
from yolograph.quantization.profiles import get_profile
from yolograph.quantization.qdq import (PROFILE_KEY, ActivationGroup, activation_groups, finalize_weights,
                                        strip_activation_qdq)
from yolograph.quantization.scales import IntegerType, clip_range

# Measured on the real yolov8n with the verifier's inputs (two seeded uniform-noise images): box rows
# 34-39 dB for every method; score rows 12.5-14.5 dB with percentile and 7.5-9.6 dB with minmax (2 to 32
# calibration images); on coco128 images the scores reach 13-16 dB. Scores are the weak group: most are
# ~1e-3 and carry little energy. A broken quantization is far below: quantizing the decode's final Concat
# with one scale (what ORT's quantize_static does by default) rounds every score to 0, i.e. 0.0 dB.
# 5 dB sits between the broken case and the weakest legitimate configuration.
CALIBRATE_MIN_SQNR_DB = 5.0
# See narrow_members. Off by default: a member with a scale of its own breaks the profile's shared-scale
# rule (TensorRT's readiness check warns on the Concat, ORT's QLinearConcat requantizes that input), and on
# the trained yolov8n no group has such a member. 8 (a member sharing a scale keeps at least 5 of its 8
# bits) is the value measured on the random-weight fixtures (obb trt model.5 conv 7 dB -> 17 dB).
OWN_RANGE_RATIO = 0.0


@dataclass(frozen=True)
class CalibrateOptions(CalibrationSource):
    """images= (dataset root, image folder or yaml; the first count= or range=A:B) or npy= tensors."""

    method: Literal["minmax", "percentile", "entropy", "mse"] = "percentile"
    percentile: float = 99.99
    # A tensor whose range is narrower than 1/own_range_ratio of the widest in its shared-scale group gets
    # a scale of its own (0, the default: never; 8 rescues the random-weight fixtures). See narrow_members.
    own_range_ratio: float = OWN_RANGE_RATIO

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile={self.percentile} is outside (0, 100]; use e.g. 99.99")
        if self.own_range_ratio != 0 and self.own_range_ratio < 1:
            raise ValueError(f"own_range_ratio={self.own_range_ratio} must be 0 (off) or >= 1; use e.g. 8")


@register_pass("calibrate")
class Calibrate(Pass):
    """Set Q/DQ activation scales from calibration data (minmax|percentile|entropy|mse); weights to int8."""

    Options = CalibrateOptions
    contract = Contract.sqnr(CALIBRATE_MIN_SQNR_DB, "vs the float model, per output group")
    requires = frozenset({"qdq"})
    establishes = frozenset({"calibrated"})

    def validate(self) -> None:
        self.options.require("calibrate")

    def run(self, model: Model) -> PassResult:
        options = self.options
        profile = get_profile(model.metadata.get(PROFILE_KEY, "ort-cpu"))
        itype = IntegerType(profile.activation_signed, profile.activation_symmetric)
        groups = activation_groups(model)
        observers, images = collect_observers(model, options.require("calibrate"),
                                              histogram=options.method != "minmax")
        full_range = head_logit_tensors(model)
        own = 0
        for group in groups:
            ranges = {
                t: clip_range(observers[t], "minmax" if t in full_range else options.method, itype, options.percentile)
                for t in group.tensors
            }
            for tensor in narrow_members(ranges, itype.symmetric, options.own_range_ratio):
                give_own_scale(model, tensor).set(*itype.params(*ranges.pop(tensor)))
                own += 1
            group.set(*itype.params(min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())))
        stats = {"scale_groups": len(groups), "images": images, "method": options.method, "own_range": own}
        stats.update(finalize_weights(model, profile))
        model.metadata.pop(UNCALIBRATED_KEY, None)
        return PassResult(changed=True, stats=stats)


def narrow_members(ranges: dict[str, tuple[float, float]], symmetric: bool, ratio: float) -> list[str]:
    """Members of one shared-scale group whose range is under 1/`ratio` of the group's widest member.

    A shared scale spans the union, so such a member keeps fewer than 8 - log2(ratio) bits: a Concat
    joining a small skip tensor with a large upsampled one (the random-weight fixtures' neck: 1.3 vs 51
    std) quantized the small one, which also feeds the next Conv, at 7 dB instead of 16. With a range of
    its own the backend requantizes that one input at the shared op (ORT's QLinearConcat takes a scale
    per input, TensorRT inserts the requantization); members of similar ranges keep sharing, so on the
    trained yolov8n the plan is unchanged (see the benchmarks README).
    """
    if ratio == 0 or len(ranges) < 2:
        return []
    spans = {t: max(-lo, hi, 0.0) if symmetric else max(hi, 0.0) - min(lo, 0.0) for t, (lo, hi) in ranges.items()}
    widest = max(spans.values())
    return [t for t, span in spans.items() if span * ratio < widest]


def give_own_scale(model: Model, tensor: str) -> ActivationGroup:
    """Rebind `tensor`'s Quantize/Dequantize pair to a new (scale, zero point) of its own."""
    quantize = next(n for n in model.graph.nodes if n.op == "QuantizeLinear" and n.inputs[0].name == tensor)
    scale, zero_point = quantize.inputs[1], quantize.inputs[2]
    own_scale = gs.Constant(f"{tensor}_qscale_own", np.array(scale.values, copy=True))
    own_zero = gs.Constant(f"{tensor}_qzero_own", np.array(zero_point.values, copy=True))
    quantize.inputs[1], quantize.inputs[2] = own_scale, own_zero
    for dequantize in quantize.outputs[0].outputs:
        if dequantize.op == "DequantizeLinear":
            dequantize.inputs[1], dequantize.inputs[2] = own_scale, own_zero
    return ActivationGroup(own_scale, own_zero, [tensor])


def head_logit_tensors(model: Model) -> set[str]:
    """Outputs of the Detect head's final Convs: box-distribution and class logits.

    Their rare large values *are* the detections (a confident class, a sharp DFL bin), so clipping them
    (percentile/entropy/mse) caps the best scores: they always keep their full min/max range.
    """
    names = set(model.facts.head_convs)
    return {n.outputs[0].name for n in model.graph.nodes if n.name in names}


def collect_observers(model: Model, source: CalibrationSource, histogram: bool = True,
                      label: str = "calibrate") -> tuple[dict[str, RangeObserver], int]:
    """Observers of every activation Q input of `model` filled from `source` in float, and the image count."""
    tensors = [t for group in activation_groups(model) for t in group.tensors]
    observers = {t: RangeObserver(histogram=histogram) for t in tensors}
    stats_model = strip_activation_qdq(model, keep_outputs=tensors)
    context = PassContext.current()
    inputs = context.calibration_tensors(source, model_input_size(model))
    total = source.count if source.npy is None and source.range is None else None
    images = stream_tensors(stats_model, tensors, inputs, lambda name, value: observers[name].update(value),
                            label=label, total=total, threads=context.threads)
    return observers, images
